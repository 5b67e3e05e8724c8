"""The ``process`` runtime: a pool of warm worker processes per function.

Each worker is ``python proxy/functions/worker.py`` started with ``subprocess`` (fork+exec,
never a bare fork of the gateway worker, which runs granian's threads) and talks to the
gateway over two pipes in length-prefixed frames with a fixed binary header (the protocol
is described in worker.py). The first invocation that finds no idle worker pays the cold
start (interpreter + handler import, logged as Init Duration); after that workers are
reused, last used first (the warmest). A worker that passes the function timeout is killed
(SIGKILL) and dropped; one that dies (crash, ``os._exit``, its memory limit) is dropped;
only the invocation it was running fails, and the next invocation starts a fresh worker
(as does one that found its idle worker dead).

A warm invocation costs the gateway one write (the request, in one syscall) and one read
(the reply) on the pipes; the worker one read and one write, plus an lseek and a getrusage.
The reply says where the worker's output file (stdout and stderr, a memfd) ends: the
gateway reads exactly the new bytes, or nothing when the handler wrote nothing. The
function timeout is one timer per runtime, armed for the earliest deadline in flight, not
a task or a timer per call. Workers run SCHED_BATCH (see worker._sched_batch; set
GWPROXY_PROCESS_SCHED_BATCH=0 for the default policy): a woken worker does not preempt the
gateway's event loop.

Memory limit: ``RLIMIT_AS`` is set in the worker before the handler is imported, to the
interpreter's own address space plus ``memory_mb`` (AWS counts the runtime too; counting
only what the function adds keeps a 128 MB function usable with CPython's ~30 MB base).
An allocation past it raises MemoryError; the invocation fails with
``Runtime.OutOfMemory`` and the worker is replaced. Max Memory Used is the worker's own
peak resident memory (VmHWM), exact after every invocation (see worker._Peak).
"""
from __future__ import annotations

import asyncio
import os
import struct
import subprocess
import sys
import time

import orjson

from .invocation import (_UNSET, FunctionLog, Limiter, Result, error_result, exit_text, init_error_result,
                         timeout_message)
from .spec import INIT_TIMEOUT
from .spec import FunctionSpec
from .worker import ERROR, INIT_ERROR, OK, PROTOCOL, READY, REP, REQ, RESET_LOG

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
MAX_READ_LOG = 1 << 20
#: the worker's output file is emptied (on the next request) once it holds this much
LOG_RESET = 256 * 1024
#: workers run under SCHED_BATCH (see worker._sched_batch): they do not preempt the gateway
#: when they wake up. GWPROXY_PROCESS_SCHED_BATCH=0 leaves them SCHED_OTHER.
SCHED_BATCH = os.environ.get("GWPROXY_PROCESS_SCHED_BATCH", "1") not in ("0", "false", "no", "")
_REP_BODY = struct.Struct(REP.format[0] + REP.format[2:])    # a reply without its length
_REP_LEN = REP.size
_pack_req = REQ.pack
_unpack_rep = _REP_BODY.unpack_from
_perf = time.perf_counter
_time = time.time
_dumps = orjson.dumps
#: what a call's future gets instead of a reply frame
_TIMEOUT = "timeout"
_DIED = "died"


class WorkerDied(Exception):
    pass


class _FrameReader(asyncio.Protocol):
    """Reads reply frames from the worker: one outstanding request at a time, whose future
    (``waiter``) gets the frame (bytes: the whole frame, length included), or ``_DIED``."""

    def __init__(self):
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.frames: list = []
        self.closed = False

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        if not buf:
            n = len(data)
            if n >= 4 and n == 4 + int.from_bytes(data[:4], "big"):
                self._deliver(data)          # the common case: exactly one frame, in one read
                return
            buf = self.buf = bytearray(data)
        else:
            buf += data
        while len(buf) >= 4:
            end = 4 + int.from_bytes(buf[:4], "big")
            if len(buf) < end:
                return
            frame = bytes(buf[:end])
            del buf[:end]
            self._deliver(frame)

    def _deliver(self, frame: bytes) -> None:
        w = self.waiter
        if w is not None and not w.done():
            self.waiter = None
            w.set_result(frame)
        else:
            self.frames.append(frame)

    def connection_lost(self, exc) -> None:
        self.closed = True
        w = self.waiter
        if w is not None and not w.done():
            self.waiter = None
            w.set_result(_DIED)

    def expect(self, loop) -> asyncio.Future:
        """The future of the next frame (already resolved when one is waiting)."""
        fut = loop.create_future()
        if self.frames:
            fut.set_result(self.frames.pop(0))
        elif self.closed:
            fut.set_result(_DIED)
        else:
            self.waiter = fut
        return fut


class Worker:
    __slots__ = ("proc", "reader", "wtransport", "rtransport", "logfd", "dead", "init_ms",
                 "init_output", "loop", "log_pos", "deadline")
    reader: _FrameReader            # (set by start)
    loop: asyncio.AbstractEventLoop

    def __init__(self):
        self.dead = False
        self.init_ms = 0.0
        self.init_output = ""
        self.proc = None
        self.logfd = -1
        self.wtransport = None
        self.rtransport = None
        self.log_pos = 0          # where the output of the next invocation starts in logfd
        self.deadline = 0.0       # loop.time() by which the current call must answer

    @classmethod
    async def start(cls, spec: FunctionSpec) -> tuple["Worker", dict | None]:
        """A ready worker, or (worker, init error document)."""
        self = cls()
        loop = self.loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        try:
            self.logfd = os.memfd_create(f"fn-{spec.name}", 0)
        except (AttributeError, OSError):
            import tempfile
            self.logfd = os.dup(tempfile.TemporaryFile().fileno())
        env = spec.lambda_env()
        env["_GWPROXY_PPID"] = str(os.getpid())
        env["_GWPROXY_AS_LIMIT"] = str(spec.memory_mb * 1024 * 1024)
        env["_GWPROXY_ARN"] = spec.arn
        env["_GWPROXY_PROTOCOL"] = PROTOCOL
        if SCHED_BATCH:
            env["_GWPROXY_SCHED_BATCH"] = "1"
        try:
            self.proc = subprocess.Popen(
                [sys.executable, WORKER, str(p2c_r), str(c2p_w)],
                stdin=subprocess.DEVNULL, stdout=self.logfd, stderr=self.logfd,
                pass_fds=(p2c_r, c2p_w), env=env, cwd=spec.code or None, close_fds=True)
        finally:
            os.close(p2c_r)
            os.close(c2p_w)
        self.wtransport, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(p2c_w, "wb", buffering=0))
        self.rtransport, self.reader = await loop.connect_read_pipe(_FrameReader, os.fdopen(c2p_r, "rb", buffering=0))
        err = None
        end = None
        try:
            frame = await asyncio.wait_for(self.reader.expect(loop), INIT_TIMEOUT)
            if frame is _DIED:
                raise WorkerDied()
            kind, _, end = _unpack_rep(frame, 4)
            if kind == INIT_ERROR:
                err = orjson.loads(memoryview(frame)[_REP_LEN:])
            elif kind != READY:
                raise WorkerDied()
        except asyncio.TimeoutError:
            err = {"errorType": "Runtime.InitTimeout", "errorMessage": f"Init phase timed out after {INIT_TIMEOUT:.0f} seconds"}
        except WorkerDied:
            err = {"errorType": "Runtime.ExitError", "errorMessage": "Runtime exited during init: " + self._exit_text()}
        self.init_ms = (time.perf_counter() - t0) * 1000
        self.init_output = self.read_output(end)
        if err is not None:
            self.kill()
        return self, err

    def _exit_text(self) -> str:
        rc = self.proc.poll() if self.proc else None
        if rc is None and self.proc is not None:
            try:
                rc = self.proc.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
        return exit_text(rc)

    def read_output(self, end: int | None = None) -> str:
        """This invocation's output: from where the previous one's ended to ``end`` (the
        worker's reply says; nothing to read when they are equal), or to the end of the
        file when there was no reply (the worker died or was killed). At most the last
        MAX_READ_LOG bytes."""
        pos = self.log_pos
        if end == pos:
            return ""
        try:
            if end is None:
                end = os.fstat(self.logfd).st_size
            if end < pos:
                pos = 0           # emptied behind our back
            self.log_pos = end
            n = end - pos
            if n > MAX_READ_LOG:
                pos, n = end - MAX_READ_LOG, MAX_READ_LOG
            data = os.pread(self.logfd, n, pos) if n > 0 else b""
        except OSError:
            return ""
        return data.decode("utf-8", "replace")

    def send(self, flags: int, deadline_ms: int, request_id: str, extra: bytes,
             payload: bytes | bytearray) -> asyncio.Future:
        """Write one request; returns the future of its reply frame."""
        rid = request_id.encode()
        data = b"".join((_pack_req(REQ.size - 4 + len(rid) + len(extra) + len(payload), flags,
                                   deadline_ms, len(rid), len(extra)), rid, extra, payload))
        self.wtransport.write(data)
        return self.reader.expect(self.loop)

    def close_log(self) -> None:
        if self.logfd >= 0:
            try:
                os.close(self.logfd)
            except OSError:
                pass
            self.logfd = -1

    def kill(self) -> None:
        if self.dead:
            return
        self.dead = True
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
        except OSError:
            pass
        for t in (self.wtransport, self.rtransport):
            if t is not None:
                t.close()
        if self.proc is not None:
            proc = self.proc
            try:
                asyncio.get_running_loop().run_in_executor(None, proc.wait)
            except RuntimeError:
                try:
                    proc.wait(1)
                except Exception:
                    pass


def _hwm_mb(pid: int) -> int:
    """Peak resident memory of a live process (VmHWM), in MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        pass
    return 0


class ProcessRuntime:
    def __init__(self, spec: FunctionSpec, log: FunctionLog, concurrency: int):
        self.spec = spec
        self.log = log
        self.limiter = Limiter(concurrency, spec.queue_wait)
        self.idle: list[Worker] = []
        self.busy: set[Worker] = set()
        self._timeout = spec.timeout
        self._timer: asyncio.TimerHandle | None = None     # one for all calls in flight (_arm)
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    # -- timeouts: a call's deadline is checked by one timer per runtime, armed for the
    # earliest deadline in flight, instead of a timer per call (every call of a function has
    # the same timeout: a later call's deadline is never earlier)
    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is None or self._timer_loop is not loop:
            self._timer = loop.call_at(when, self._expire, loop)
            self._timer_loop = loop

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop is not self._timer_loop:
            return                      # superseded by a timer on another loop
        self._timer = None
        now = loop.time() + 0.001       # (uvloop's clock and timers have 1 ms steps)
        nxt = None
        for w in self.busy:
            fut = w.reader.waiter
            if fut is None or fut.done() or w.loop is not loop:
                continue
            if w.deadline <= now:
                w.reader.waiter = None
                fut.set_result(_TIMEOUT)
            elif nxt is None or w.deadline < nxt:
                nxt = w.deadline
        if nxt is not None:
            self._arm(loop, nxt)

    async def invoke(self, event, request_id: str, client_context=None, identity=None) -> Result:
        spec = self.spec
        payload = event if isinstance(event, (bytes, bytearray)) else _dumps(event)
        lim = self.limiter
        if not lim.try_acquire():
            await lim.acquire()        # raises Throttled
        w = None
        try:
            init_ms = None
            init_output = ""
            idle = self.idle
            while idle:
                w = idle.pop()
                if not w.reader.closed:
                    break
                w.kill()                # died while idle: not this invocation's failure
                w.close_log()
                w = None
            if w is None:
                w, err = await Worker.start(spec)
                init_ms, init_output = w.init_ms, w.init_output
                if err is not None:
                    res = init_error_result(self.log, err, request_id, init_ms, None, init_output)
                    w.close_log()
                    w = None
                    return res
            self.busy.add(w)
            timeout = self._timeout
            flags = 0
            if w.log_pos >= LOG_RESET:
                flags = RESET_LOG
                w.log_pos = 0
            extra = b""
            if client_context is not None or identity is not None:
                extra = _dumps({"client_context": client_context, "identity": identity})
            loop = w.loop
            t0 = _perf()
            fut = w.send(flags, int((_time() + timeout) * 1000), request_id, extra, payload)
            w.deadline = deadline = loop.time() + timeout
            if self._timer is None or self._timer_loop is not loop:
                self._arm(loop, deadline)
            frame = await fut
            status = None
            max_mb = 0
            end = None
            if frame.__class__ is bytes:
                kind, maxrss_kb, end = _unpack_rep(frame, 4)
                max_mb = maxrss_kb >> 10
                out = frame[_REP_LEN:]
                if kind == OK:
                    res = Result(_UNSET, out, None, request_id)
                else:
                    res = Result(_UNSET, out, "Unhandled", request_id)
                    status = "error"
                    if kind != ERROR:
                        w.kill()     # it exits after answering (out of memory, SystemExit)
            elif frame is _TIMEOUT:
                etype, msg = timeout_message(request_id, timeout)
                max_mb = _hwm_mb(w.proc.pid)
                w.kill()
                res = error_result(etype, msg, request_id)
                status = "timeout"
            else:
                text = w._exit_text()
                w.kill()
                res = error_result("Runtime.ExitError",
                                   f"RequestId: {request_id} Error: Runtime exited with error: {text}", request_id)
                status = "error"
            dur = (_perf() - t0) * 1000
            output = w.read_output(end) if end != w.log_pos else ""
            if status is not None:
                if status == "timeout":
                    output += f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {res.value['errorMessage']}\n"
                elif res.error is not None and w.dead:
                    output += res.value["errorMessage"] + "\n"
            res.log = self.log.record(request_id, output, dur, max_mb, init_ms, status, init_output)
            if not w.dead and w.reader.closed:
                w.kill()     # exited right after answering
            return res
        except BaseException:
            if w is not None:
                w.kill()     # cancelled mid-invocation: the worker's state is unknown
            raise
        finally:
            if w is not None:
                self.busy.discard(w)
                if not w.dead:
                    self.idle.append(w)
                else:
                    w.close_log()
            lim.release()

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for w in self.idle + list(self.busy):
            w.kill()
            w.close_log()
        self.idle.clear()
        self.busy.clear()
