"""The process runtime's worker protocol, driven through ``ProcessRuntime.invoke``: the
output byte count in each reply (output attributed to its own invocation, whichever
invocations print; nothing read when nothing was written; outputs larger than a pipe's
buffer; the log file emptied past its threshold), large events and results, Max Memory
Used per invocation, several timeouts in flight on the one timer, a worker that died while
idle, the Invoke API's client context and identity, init errors; the reply frame reader
and the reserved-concurrency queue's single timer, on their own; a worker started by a
gateway of another protocol exits at once."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import time

import pytest

from proxy.functions import process
from proxy.functions.invocation import FunctionLog, Limiter, Throttled
from proxy.functions.process import ProcessRuntime, _FrameReader
from proxy.functions.spec import FunctionSpec
from proxy.functions.worker import OK, REP

from .conftest import FIXTURES



@pytest.fixture
def make(devnull):
    made = []

    def make_(handler, timeout=3.0, concurrency=1, queue_wait=1.0, memory_mb=128):
        spec = FunctionSpec(name="p_" + handler.replace(".", "_"), runtime="process",
                            handler="proc_io." + handler, code=FIXTURES, timeout=timeout,
                            concurrency=concurrency, queue_wait=queue_wait, memory_mb=memory_mb)
        rt = ProcessRuntime(spec, FunctionLog(spec.name, memory_mb, fd=devnull), concurrency)
        made.append(rt)
        return rt
    yield make_
    for rt in made:       # a loop is gone by now: kill what is left without one
        for w in rt.idle + list(rt.busy):
            if w.proc is not None and w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
            w.close_log()


async def closing(rt, coro):
    try:
        return await coro
    finally:
        await rt.close()


def between(log: str, rid: str) -> str:
    """The output lines of one invocation's log block (between START and END)."""
    start = f"START RequestId: {rid} Version: $LATEST\n"
    end = f"END RequestId: {rid}\n"
    assert start in log and end in log, log
    return log[log.index(start) + len(start):log.index(end)]


REPORT_MEM = re.compile(r"Max Memory Used: (\d+) MB")


# ------------------------------------------------------------------------- output

def test_output_belongs_to_its_own_invocation(run, make):
    rt = make("say")
    events = [{"say": "one"}, {}, {"say": "two", "err": "two-err"}, {}, {}, {"say": "three"}, {}]

    async def go():
        return [await rt.invoke(ev, f"rid-{i}") for i, ev in enumerate(events)]
    results = run(closing(rt, go()))
    assert [r.error for r in results] == [None] * len(events)
    assert len({r.value["pid"] for r in results}) == 1          # one warm worker throughout
    outs = [between(r.log, f"rid-{i}") for i, r in enumerate(results)]
    assert outs == ["one\n", "", "two\ntwo-err\n", "", "", "three\n", ""]
    assert "Init Duration" in results[0].log and "Init Duration" not in results[1].log


def test_output_without_newline_and_raw_writes(run, make):
    rt = make("say")

    async def go():
        a = await rt.invoke({"nonl": "partial"}, "r1")
        b = await rt.invoke({"raw": "to fd 1\n"}, "r2")
        c = await rt.invoke({}, "r3")
        return a, b, c
    a, b, c = run(closing(rt, go()))
    assert between(a.log, "r1") == "partial\n"
    assert between(b.log, "r2") == "to fd 1\n"
    assert between(c.log, "r3") == ""


def test_output_larger_than_a_pipe_buffer(run, make):
    rt = make("say")
    n = 200_000

    async def go():
        return [await rt.invoke(ev, f"r{i}") for i, ev in enumerate([{"big": n}, {}, {"big": 10, "say": "s"}])]
    big, quiet, small = run(closing(rt, go()))
    assert between(big.log, "r0") == "x" * n + "\n"
    assert between(quiet.log, "r1") == ""
    assert between(small.log, "r2") == "s\n" + "x" * 10 + "\n"


def test_the_log_file_is_emptied_past_its_threshold(run, make, monkeypatch):
    monkeypatch.setattr(process, "LOG_RESET", 10_000)
    rt = make("say")

    async def go():
        out = []
        sizes = []
        for i in range(12):
            ev = {"big": 3000} if i % 3 else {"say": f"line {i}"}
            out.append((i, ev, await rt.invoke(ev, f"r{i}")))
            sizes.append(os.fstat(rt.idle[0].logfd).st_size)
        return out, sizes
    out, sizes = run(closing(rt, go()))
    for i, ev, res in out:
        want = f"line {i}\n" if "say" in ev else "x" * 3000 + "\n"
        assert between(res.log, f"r{i}") == want
    assert max(sizes) < 10_000 + 3002          # emptied once past the threshold
    assert any(b < a for a, b in zip(sizes, sizes[1:]))


def test_crash_and_timeout_keep_their_own_output(run, make):
    """No reply, no byte count: the output is what the file holds past the last reply's."""
    rt = make("nap", timeout=0.5)

    async def go():
        return [await rt.invoke(ev, f"r{i}") for i, ev in enumerate([
            {"say": "before"}, {"say": "dying", "exit": 3}, {"say": "fresh"}, {},
            {"say": "sleepy", "s": 5}, {"say": "again"}])]
    before, crash, fresh, quiet, timeout, again = run(closing(rt, go()))
    assert between(before.log, "r0") == "before\n"
    assert crash.value["errorType"] == "Runtime.ExitError"
    assert between(crash.log, "r1") == ("dying\nRequestId: r1 Error: Runtime exited with error: "
                                        "exit status 3\n")
    assert between(fresh.log, "r2") == "fresh\n" and "Init Duration" in fresh.log
    assert between(quiet.log, "r3") == ""
    out = between(timeout.log, "r4")
    assert out.startswith("sleepy\n") and out.endswith("Task timed out after 0.50 seconds\n")
    assert out.count("\n") == 2
    assert between(again.log, "r5") == "again\n" and "Init Duration" in again.log


# ------------------------------------------------------------------ events, results

def test_large_event_and_result(run, make):
    rt = make("blob")
    pad = "p" * 300_000                # over a pipe's 64 KB: the worker reads it in parts
    n = 1_000_000                      # and the gateway reads the answer in parts

    async def go():
        a = await rt.invoke({"pad": pad, "n": n}, "r1")
        b = await rt.invoke({"n": 3}, "r2")
        return a, b
    a, b = run(closing(rt, go()))
    assert a.error is None and a.value == {"data": "y" * n, "pad": len(pad)}
    assert b.value == {"data": "yyy", "pad": 0}


def test_event_given_as_json_bytes(run, make):
    rt = make("blob")
    res = run(closing(rt, rt.invoke(b'{"n": 2, "pad": "abc"}', "r1")))
    assert res.value == {"data": "yy", "pad": 3}


def test_client_context_and_identity(run, make):
    rt = make("ctx")

    async def go():
        a = await rt.invoke({}, "r1", {"custom": {"k": "v"}, "client": {"app_title": "t"}},
                            {"cognitoIdentityId": "id-1"})
        b = await rt.invoke({}, "r2")
        return a, b
    a, b = run(closing(rt, go()))
    assert a.value["custom"] == {"k": "v"} and a.value["app_title"] == "t"
    assert a.value["identity"] == "id-1"
    assert a.value["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:p_ctx"
    assert a.value["rid"] == "r1" and 0 < a.value["remaining"] <= 3000
    assert b.value["custom"] is None and b.value["identity"] is None and b.value["rid"] == "r2"


def _vm_hwm_mb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(ln for ln in f if ln.startswith("VmHWM:")).split()[1]) // 1024


def test_max_memory_used_is_read_per_invocation(run, make):
    rt = make("grow", memory_mb=256)

    async def go():
        out = []
        for i, mb in enumerate([0, 40, 0]):
            res = await rt.invoke({"mb": mb}, f"r{i}")
            out.append((res, _vm_hwm_mb(res.value["pid"])))
        return out
    results = run(closing(rt, go()))
    mem = [int(REPORT_MEM.search(r.log).group(1)) for r, _ in results]
    # the worker's own peak (its VmHWM, read here just after), not the gateway's that exec
    # leaves in ru_maxrss
    assert all(m <= hwm <= m + 1 for m, (_, hwm) in zip(mem, results)), (mem, results)
    assert mem[0] > 0
    assert mem[1] >= mem[0] + 39               # the invocation that grew reports it at once
    assert mem[2] >= mem[1]                    # a peak: it stays


# ------------------------------------------------------------------------ timeouts

def test_timeouts_of_calls_in_flight_fire_each_at_its_own_deadline(run, make):
    rt = make("nap", timeout=0.4, concurrency=3)

    async def timed(ev, rid, delay):
        await asyncio.sleep(delay)
        t0 = time.monotonic()
        res = await rt.invoke(ev, rid)
        return res, time.monotonic() - t0

    async def go():
        await rt.invoke({}, "warm")
        return await asyncio.gather(timed({"s": 5}, "a", 0), timed({"s": 5}, "b", 0.15),
                                    timed({"s": 0.05}, "c", 0.05))
    (a, ta), (b, tb), (c, tc) = run(closing(rt, go()))
    for res, took in ((a, ta), (b, tb)):
        assert res.value["errorType"] == "Sandbox.Timedout" and "Status: timeout" in res.log
        assert 0.38 < took < 1.2, took
    assert c.error is None and "Status" not in c.log      # (it had a cold start)


def test_a_timed_out_worker_is_replaced(run, make):
    rt = make("nap", timeout=0.3)

    async def go():
        a = await rt.invoke({}, "r1")
        b = await rt.invoke({"s": 3}, "r2")
        c = await rt.invoke({}, "r3")
        return a, b, c
    a, b, c = run(closing(rt, go()))
    assert b.value["errorType"] == "Sandbox.Timedout"
    assert c.error is None and c.value["pid"] != a.value["pid"] and "Init Duration" in c.log


# --------------------------------------------------------------------- worker life

def test_a_worker_that_died_while_idle_is_replaced(run, make):
    rt = make("nap")

    async def go():
        a = await rt.invoke({}, "r1")
        os.kill(a.value["pid"], signal.SIGKILL)
        for _ in range(100):              # until the gateway has seen its pipe close
            await asyncio.sleep(0.02)
            if rt.idle[0].reader.closed:
                break
        b = await rt.invoke({}, "r2")
        return a, b
    a, b = run(closing(rt, go()))
    assert b.error is None and b.value["pid"] != a.value["pid"]
    assert "Init Duration" in b.log


def test_init_error(run, devnull):
    spec = FunctionSpec(name="p_broken", runtime="process", handler="broken_import.handler",
                        code=FIXTURES)
    rt = ProcessRuntime(spec, FunctionLog(spec.name, 128, fd=devnull), 1)
    res = run(closing(rt, rt.invoke({}, "r1")))
    assert res.error == "Unhandled"
    assert res.value["errorType"] == "Runtime.ImportModuleError"
    assert res.value["requestId"] == "r1"
    assert "Init Duration" in res.log and "Status: error" in res.log
    assert not rt.idle and not rt.busy


# ----------------------------------------------------------------- the frame reader

def _reply(payload: bytes, kind: int = OK, end: int = 0) -> bytes:
    return REP.pack(REP.size - 4 + len(payload), kind, 1024, end) + payload


@pytest.mark.parametrize("chunk", [1, 3, 17, 1000])
def test_frame_reader_reassembles_frames(chunk):
    frames = [_reply(b'{"a": 1}'), _reply(b""), _reply(b"x" * 5000, end=7)]
    stream = b"".join(frames)
    loop = asyncio.new_event_loop()
    try:
        r = _FrameReader()
        got = []
        for i in range(0, len(stream), chunk):
            if r.waiter is None:
                r.expect(loop).add_done_callback(lambda f: got.append(f.result()))
            r.data_received(stream[i:i + chunk])
            loop.run_until_complete(asyncio.sleep(0))
        while r.frames:
            got.append(r.expect(loop).result())
        assert got == frames
        r.connection_lost(None)
        assert r.expect(loop).result() == process._DIED
    finally:
        loop.close()


# ------------------------------------------------------------- the limiter's timer

def test_limiter_throttles_each_waiter_at_its_own_deadline(run):
    async def go():
        lim = Limiter(1, 0.3)
        await lim.acquire()
        t0 = time.monotonic()

        async def wait(delay):
            await asyncio.sleep(delay)
            try:
                await lim.acquire()
            except Throttled:
                return "throttled", time.monotonic() - t0
            return "got", time.monotonic() - t0
        a = asyncio.ensure_future(wait(0))
        b = asyncio.ensure_future(wait(0.1))
        c = asyncio.ensure_future(wait(0.25))
        await asyncio.wait((a, b))
        lim.release()                     # c (deadline 0.55) gets the slot
        return await asyncio.gather(a, b, c), lim
    (a, b, c), lim = run(go())
    assert a[0] == "throttled" and 0.28 < a[1] < 0.6
    assert b[0] == "throttled" and 0.38 < b[1] < 0.7 and b[1] > a[1]
    assert c[0] == "got"
    assert lim.free == 0 and not lim._waiters


def test_limiter_skips_cancelled_waiters(run):
    async def go():
        lim = Limiter(1, 5.0)
        await lim.acquire()
        a = asyncio.ensure_future(lim.acquire())
        b = asyncio.ensure_future(lim.acquire())
        await asyncio.sleep(0.01)
        a.cancel()
        await asyncio.sleep(0.01)
        lim.release()                     # to b, past the cancelled a
        await asyncio.wait_for(b, 1)
        lim.release()
        return lim
    lim = run(go())
    assert lim.free == 1 and not lim._waiters


def test_a_worker_refuses_a_gateway_of_another_protocol():
    """(A gateway process still running older code during a reload starts this worker.py.)"""
    import subprocess
    import sys
    r, w = os.pipe()
    try:
        p = subprocess.run([sys.executable, process.WORKER, str(r), str(w)], pass_fds=(r, w),
                           env={"PATH": os.environ.get("PATH", ""), "_GWPROXY_PROTOCOL": "1"},
                           capture_output=True, timeout=30)
    finally:
        os.close(r)
        os.close(w)
    assert p.returncode == 1 and b"another worker protocol" in p.stderr
