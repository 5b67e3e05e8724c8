"""The ``runtime-api`` runtime: the gateway serves the Lambda Runtime API, so any Lambda
runtime (AWS's ``awslambdaric`` for Python, the Node/Java/Go/custom ``bootstrap``
runtimes) serves the function unchanged.

The gateway starts the runtime processes itself from the function's ``command`` (default:
``[python, -m, awslambdaric, <handler>]``; ``{python}`` and ``{handler}`` are substituted),
one per concurrent invocation, up to ``concurrency``, and reuses them warm. Each process
gets its own Runtime API listener on a loopback port (``AWS_LAMBDA_RUNTIME_API``), so the
gateway always knows which process holds which invocation: the one that passes its
timeout, or dies, is killed and replaced and only its own invocation fails.

Endpoints: ``GET /2018-06-01/runtime/invocation/next`` (long poll; the event with the
``Lambda-Runtime-*`` headers), ``POST .../invocation/{id}/response``,
``POST .../invocation/{id}/error``, ``POST /2018-06-01/runtime/init/error``.

The process's stdout/stderr go to a file the gateway reads per invocation (function log).
No memory limit is applied to these processes (runtimes such as the JVM reserve far more
address space than they use); Max Memory Used is the process's peak RSS.
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import time

import orjson

from .invocation import (FunctionLog, Limiter, Result, deadline_ms, error_result, exit_text,
                         init_error_result, timeout_message)
from .process import _hwm_mb
from .spec import INIT_TIMEOUT, FunctionSpec

PREFIX = "/2018-06-01/runtime"
MAX_RESPONSE = 6 * 1024 * 1024 + 1024
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            413: "Payload Too Large", 500: "Internal Server Error"}


class _Invocation:
    __slots__ = ("id", "payload", "headers", "done")

    def __init__(self, rid, payload, headers, loop):
        self.id = rid
        self.payload = payload
        self.headers = headers
        self.done = loop.create_future()     # -> (ok: bool, body: bytes, error_type)


class RuntimeProcess:
    """One runtime process with its own Runtime API listener."""

    def __init__(self, spec: FunctionSpec):
        self.spec = spec
        self.server = None
        self.proc = None
        self.logfd = -1
        self.ready: asyncio.Future | None = None      # first GET /next, or init error
        self.exited: asyncio.Future | None = None
        self.pending: _Invocation | None = None        # waiting to be fetched
        self.current: _Invocation | None = None        # fetched, not answered
        self.next_waiter: asyncio.Future | None = None
        self.dead = False
        self.init_error: dict | None = None
        self._pidfd = -1

    async def start(self, command: list[str]) -> dict | None:
        loop = asyncio.get_running_loop()
        self.ready = loop.create_future()
        self.exited = loop.create_future()
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        env = self.spec.lambda_env()
        env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{port}"
        try:
            memfd = os.memfd_create(f"rt-{self.spec.name}", 0)
            # an O_APPEND description for the child, so the log can be emptied under it
            out = os.open(f"/proc/self/fd/{memfd}", os.O_WRONLY | os.O_APPEND)
            self.logfd = memfd
        except (AttributeError, OSError):
            import tempfile
            f = tempfile.TemporaryFile()
            self.logfd = os.dup(f.fileno())
            out = os.open(f"/proc/self/fd/{self.logfd}", os.O_WRONLY | os.O_APPEND)
        try:
            self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                         env=env, cwd=self.spec.code or None, close_fds=True)
        except OSError as e:
            os.close(out)
            self.kill()
            return {"errorType": "Runtime.InvalidEntrypoint", "errorMessage": f"cannot start runtime: {e.strerror}"}
        os.close(out)
        self._watch_exit(loop)
        done, _ = await asyncio.wait((self.ready, self.exited), timeout=INIT_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        if self.ready in done and self.init_error is None:
            return None
        if self.init_error is not None:
            err = self.init_error
        elif self.exited in done:
            err = {"errorType": "Runtime.ExitError",
                   "errorMessage": f"Runtime exited during init: {exit_text(self.proc.returncode)}"}
        else:
            err = {"errorType": "Runtime.InitTimeout",
                   "errorMessage": f"Init phase timed out after {INIT_TIMEOUT:.0f} seconds"}
        self.kill()
        return err

    def _watch_exit(self, loop) -> None:
        try:
            self._pidfd = os.pidfd_open(self.proc.pid)
            loop.add_reader(self._pidfd, self._on_exit)
        except (AttributeError, OSError):
            async def poll():
                while self.proc.poll() is None:
                    await asyncio.sleep(0.05)
                self._on_exit()
            loop.create_task(poll())

    def _on_exit(self) -> None:
        if self._pidfd >= 0:
            try:
                asyncio.get_running_loop().remove_reader(self._pidfd)
            except Exception:
                pass
            os.close(self._pidfd)
            self._pidfd = -1
        try:
            self.proc.wait(1)
        except Exception:
            pass
        if self.exited is not None and not self.exited.done():
            self.exited.set_result(self.proc.returncode)

    # -- log
    def log_mark(self) -> int:
        try:
            os.ftruncate(self.logfd, 0)
        except OSError:
            pass
        return 0

    def read_log(self) -> str:
        try:
            size = os.fstat(self.logfd).st_size
            start = max(0, size - (1 << 20))
            return os.pread(self.logfd, size - start, start).decode("utf-8", "replace")
        except OSError:
            return ""

    # -- the Runtime API
    def deliver(self, inv: _Invocation) -> None:
        self.pending = inv
        w = self.next_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, _ = lines[0].split(" ", 2)
                except ValueError:
                    return
                headers = {}
                for ln in lines[1:]:
                    if ln:
                        k, _, v = ln.partition(":")
                        headers[k.strip().lower()] = v.strip()
                body = b""
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size_line = await reader.readuntil(b"\r\n")
                        n = int(size_line.split(b";", 1)[0], 16)
                        if n == 0:
                            await reader.readuntil(b"\r\n")
                            break
                        parts.append(await reader.readexactly(n))
                        await reader.readexactly(2)
                    body = b"".join(parts)
                elif headers.get("content-length"):
                    n = int(headers["content-length"])
                    if n > MAX_RESPONSE:
                        self._send(writer, 413, {"errorMessage": "payload too large", "errorType": "RequestEntityTooLarge"})
                        return
                    body = await reader.readexactly(n)
                status, extra, out = await self._route(method, target.split("?", 1)[0], headers, body)
                self._send(writer, status, out, extra)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            return     # the process went away or was killed: nothing to answer
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def _route(self, method, path, headers, body):
        if path == PREFIX + "/invocation/next" and method == "GET":
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(None)
            while self.pending is None:
                self.next_waiter = asyncio.get_running_loop().create_future()
                await self.next_waiter
            inv, self.pending = self.pending, None
            self.current = inv
            return 200, inv.headers, inv.payload
        if path == PREFIX + "/init/error" and method == "POST":
            self.init_error = _error_doc(body, headers, "Runtime.Unknown")
            if self.ready is not None and not self.ready.done():
                self.ready.set_result(None)
            return 202, None, {"status": "OK"}
        if path.startswith(PREFIX + "/invocation/") and method == "POST":
            rest = path[len(PREFIX + "/invocation/"):]
            rid, _, what = rest.partition("/")
            inv = self.current
            if inv is None or inv.id != rid:
                return 400, None, {"errorMessage": f"Invalid request ID: {rid}", "errorType": "InvalidRequestID"}
            if what == "response":
                self.current = None
                if not inv.done.done():
                    inv.done.set_result((True, body, None))
                return 202, None, {"status": "OK"}
            if what == "error":
                self.current = None
                if not inv.done.done():
                    inv.done.set_result((False, orjson.dumps(_error_doc(body, headers, "Unhandled")), None))
                return 202, None, {"status": "OK"}
        return 404, None, {"errorMessage": "not found", "errorType": "NotFound"}

    @staticmethod
    def _send(writer, status, out, extra=None) -> None:
        body = out if isinstance(out, (bytes, bytearray)) else orjson.dumps(out)
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}", "Content-Type: application/json",
                 f"Content-Length: {len(body)}"]
        if extra:
            lines.extend(f"{k}: {v}" for k, v in extra.items())
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    def kill(self) -> None:
        if self.dead:
            return
        self.dead = True
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.kill()
            except OSError:
                pass
        if self.server is not None:
            self.server.close()
        w = self.next_waiter
        if w is not None and not w.done():
            w.cancel()

    def close_log(self) -> None:
        if self.logfd >= 0:
            try:
                os.close(self.logfd)
            except OSError:
                pass
            self.logfd = -1


def _error_doc(body: bytes, headers: dict, default_type: str) -> dict:
    try:
        doc = orjson.loads(body) if body else {}
        if not isinstance(doc, dict):
            doc = {"errorMessage": str(doc)}
    except ValueError:
        doc = {"errorMessage": body.decode("utf-8", "replace")}
    doc.setdefault("errorType", headers.get("lambda-runtime-function-error-type") or default_type)
    doc.setdefault("errorMessage", "")
    return doc


class RuntimeApiRuntime:
    def __init__(self, spec: FunctionSpec, log: FunctionLog, concurrency: int):
        from .service import runtime_command
        self.spec = spec
        self.log = log
        self.command = runtime_command(spec)
        self.limiter = Limiter(concurrency, spec.queue_wait)
        self.idle: list[RuntimeProcess] = []
        self.busy: set[RuntimeProcess] = set()

    async def invoke(self, event, request_id: str, client_context=None, identity=None) -> Result:
        spec = self.spec
        payload = event if isinstance(event, (bytes, bytearray)) else orjson.dumps(event)
        await self.limiter.acquire()
        rp = None
        try:
            init_ms = None
            init_output = ""
            if self.idle:
                rp = self.idle.pop()
            else:
                rp = RuntimeProcess(spec)
                t0 = time.perf_counter()
                err = await rp.start(self.command)
                init_ms = (time.perf_counter() - t0) * 1000
                init_output = rp.read_log()
                if err is not None:
                    res = init_error_result(self.log, err, request_id, init_ms, None, init_output)
                    rp.close_log()
                    rp = None
                    return res
            self.busy.add(rp)
            rp.log_mark()
            loop = asyncio.get_running_loop()
            hdrs = {"Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline_ms(spec.timeout)),
                    "Lambda-Runtime-Invoked-Function-Arn": spec.arn,
                    "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{request_id.replace('-', '')[:24]};Sampled=0"}
            if client_context:
                hdrs["Lambda-Runtime-Client-Context"] = orjson.dumps(client_context).decode()
            if identity:
                hdrs["Lambda-Runtime-Cognito-Identity"] = orjson.dumps(identity).decode()
            inv = _Invocation(request_id, payload, hdrs, loop)
            t0 = time.perf_counter()
            rp.deliver(inv)
            status = None
            done, _ = await asyncio.wait((inv.done, rp.exited), timeout=spec.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
            max_mb = _hwm_mb(rp.proc.pid)
            if inv.done in done:
                ok, body, _ = inv.done.result()
                res = Result(payload=body, error=None if ok else "Unhandled", request_id=request_id)
                if not ok:
                    status = "error"
            elif rp.exited in done:
                rp.kill()
                res = error_result("Runtime.ExitError", f"RequestId: {request_id} Error: Runtime exited with error: "
                                   f"{exit_text(rp.proc.returncode)}", request_id)
                status = "error"
            else:
                etype, msg = timeout_message(request_id, spec.timeout)
                rp.kill()
                res = error_result(etype, msg, request_id)
                status = "timeout"
            dur = (time.perf_counter() - t0) * 1000
            output = rp.read_log()
            if res.error is not None and rp.dead:
                output += res.value["errorMessage"] + "\n"
            res.log = self.log.record(request_id, output, dur, max_mb, init_ms, status, init_output)
            return res
        except BaseException:
            if rp is not None:
                rp.kill()
            raise
        finally:
            if rp is not None:
                self.busy.discard(rp)
                if rp.dead:
                    rp.close_log()
                else:
                    self.idle.append(rp)
            self.limiter.release()

    async def close(self) -> None:
        for rp in self.idle + list(self.busy):
            rp.kill()
            rp.close_log()
        self.idle.clear()
        self.busy.clear()
