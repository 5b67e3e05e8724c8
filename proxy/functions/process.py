"""The ``process`` runtime: a pool of warm worker processes per function.

Each worker is ``python proxy/functions/worker.py`` started with ``subprocess`` (fork+exec,
never a bare fork of the gateway worker, which runs granian's threads) and talks to the
gateway over two pipes in length-prefixed orjson frames. The first invocation that finds no
idle worker pays the cold start (interpreter + handler import, logged as Init Duration);
after that workers are reused, last used first (the warmest). A worker that passes the
function timeout is killed (SIGKILL) and dropped; one that dies (crash, ``os._exit``, its
memory limit) is dropped; only the invocation it was running fails, and the next
invocation starts a fresh worker.

Memory limit: ``RLIMIT_AS`` is set in the worker before the handler is imported, to the
interpreter's own address space plus ``memory_mb`` (AWS counts the runtime too; counting
only what the function adds keeps a 128 MB function usable with CPython's ~30 MB base).
An allocation past it raises MemoryError; the invocation fails with
``Runtime.OutOfMemory`` and the worker is replaced.
"""
from __future__ import annotations

import asyncio
import os
import signal
import struct
import subprocess
import sys
import time

import orjson

from .invocation import (FunctionLog, Limiter, Result, deadline_ms, error_result, init_error_result,
                         timeout_message)
from .spec import INIT_TIMEOUT
from .spec import FunctionSpec

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")
_HDR = struct.Struct(">II")
MAX_READ_LOG = 1 << 20


class WorkerDied(Exception):
    pass


class _FrameReader(asyncio.Protocol):
    """Reads frames from the worker; one outstanding request at a time."""

    def __init__(self):
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.frames: list = []
        self.closed = False

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 8:
            total, hlen = _HDR.unpack_from(self.buf)
            if len(self.buf) < 4 + total:
                break
            header = bytes(self.buf[8:8 + hlen])
            payload = bytes(self.buf[8 + hlen:4 + total])
            del self.buf[:4 + total]
            self.frames.append((header, payload))
        if self.frames and self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    async def next_frame(self):
        while not self.frames:
            if self.closed:
                raise WorkerDied()
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        return self.frames.pop(0)


class Worker:
    __slots__ = ("proc", "reader", "wtransport", "rtransport", "logfd", "dead", "init_ms",
                 "init_output")

    def __init__(self):
        self.dead = False
        self.init_ms = 0.0
        self.init_output = ""
        self.proc = None
        self.logfd = -1
        self.wtransport = None
        self.rtransport = None

    @classmethod
    async def start(cls, spec: FunctionSpec) -> tuple["Worker", dict | None]:
        """A ready worker, or (worker, init error document)."""
        self = cls()
        loop = asyncio.get_running_loop()
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
        try:
            header, _ = await asyncio.wait_for(self.reader.next_frame(), INIT_TIMEOUT)
            h = orjson.loads(header)
            if "init_error" in h:
                err = h["init_error"]
        except asyncio.TimeoutError:
            err = {"errorType": "Runtime.InitTimeout", "errorMessage": f"Init phase timed out after {INIT_TIMEOUT:.0f} seconds"}
        except WorkerDied:
            err = {"errorType": "Runtime.ExitError", "errorMessage": "Runtime exited during init: " + self._exit_text()}
        self.init_ms = (time.perf_counter() - t0) * 1000
        self.init_output = self.read_log()
        if err is not None:
            self.kill()
        return self, err

    def _exit_text(self) -> str:
        rc = self.proc.poll() if self.proc else None
        if rc is None:
            try:
                rc = self.proc.wait(0.2)
            except subprocess.TimeoutExpired:
                return "unknown"
        if rc < 0:
            try:
                return f"signal: {signal.Signals(-rc).name.replace('SIG', '').lower()}"
            except ValueError:
                return f"signal {-rc}"
        return f"exit status {rc}"

    def read_log(self) -> str:
        try:
            size = os.fstat(self.logfd).st_size
            start = max(0, size - MAX_READ_LOG)
            data = os.pread(self.logfd, size - start, start)
        except OSError:
            return ""
        return data.decode("utf-8", "replace")

    async def call(self, header: bytes, payload: bytes, timeout: float):
        self.wtransport.write(_HDR.pack(4 + len(header) + len(payload), len(header)) + header + payload)
        return await asyncio.wait_for(self.reader.next_frame(), timeout)

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

    async def invoke(self, event, request_id: str, client_context=None, identity=None) -> Result:
        spec = self.spec
        payload = event if isinstance(event, (bytes, bytearray)) else orjson.dumps(event)
        await self.limiter.acquire()        # raises Throttled
        w = None
        try:
            init_ms = None
            init_output = ""
            if self.idle:
                w = self.idle.pop()
            else:
                w, err = await Worker.start(spec)
                init_ms, init_output = w.init_ms, w.init_output
                if err is not None:
                    res = init_error_result(self.log, err, request_id, init_ms, None, init_output)
                    w.close_log()
                    w = None
                    return res
            self.busy.add(w)
            header = orjson.dumps({"id": request_id, "deadline_ms": deadline_ms(spec.timeout),
                                   "arn": spec.arn, "client_context": client_context,
                                   "identity": identity})
            t0 = time.perf_counter()
            status = None
            max_mb = None
            try:
                h, out = await w.call(header, payload, spec.timeout)
                h = orjson.loads(h)
                max_mb = h.get("maxrss_kb", 0) // 1024
                if h.get("fatal"):
                    w.kill()     # it exits after answering (out of memory, SystemExit)
                if h.get("ok"):
                    res = Result(payload=out, request_id=request_id)
                else:
                    res = Result(payload=out, error="Unhandled", request_id=request_id)
                    status = "error"
            except asyncio.TimeoutError:
                etype, msg = timeout_message(request_id, spec.timeout)
                max_mb = _hwm_mb(w.proc.pid)
                w.kill()
                res = error_result(etype, msg, request_id)
                status = "timeout"
            except WorkerDied:
                text = w._exit_text()
                w.kill()
                res = error_result("Runtime.ExitError",
                                   f"RequestId: {request_id} Error: Runtime exited with error: {text}", request_id)
                status = "error"
            dur = (time.perf_counter() - t0) * 1000
            output = w.read_log()
            if status == "timeout":
                output += f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {res.value['errorMessage']}\n"
            elif res.error is not None and w.dead:
                output += res.value["errorMessage"] + "\n"
            if max_mb is None:
                max_mb = 0
            res.log = self.log.record(request_id, output, dur, max_mb, init_ms, status, init_output)
            if not w.dead and w.proc.poll() is not None:
                w.kill()     # exited right after answering (e.g. MemoryError)
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
            self.limiter.release()

    async def close(self) -> None:
        for w in self.idle + list(self.busy):
            w.kill()
            w.close_log()
        self.idle.clear()
        self.busy.clear()
