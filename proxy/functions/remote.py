"""The ``remote`` runtime: a Lambda-compatible Invoke endpoint elsewhere (AWS Lambda itself,
another gwproxy's admin listener, LocalStack...), called with
``POST {endpoint}/2015-03-31/functions/{function_name}/invocations``, SigV4-signed when
``credentials`` are configured.

A small keep-alive HTTP/1.1 client (connections reused, at most ``concurrency`` at once).
The remote's ``X-Amz-Function-Error`` makes the result a function error; a throttle
(429) is passed on as our own throttle; an unreachable endpoint, a non-2xx status or the
function timeout is a function error (REST 502 / HTTP 500) for the route. The function's
own log stays with the remote; ours records START/END/REPORT and the tail the remote
returns (``X-Amz-Log-Type: Tail``).
"""
from __future__ import annotations

import asyncio
import base64
import ssl
import time
from urllib.parse import quote, urlsplit

import orjson

from .invocation import FunctionLog, Limiter, Result, Throttled, error_result, timeout_message
from .sigv4 import sign
from .spec import FunctionSpec


class _HttpError(Exception):
    pass


class RemoteRuntime:
    def __init__(self, spec: FunctionSpec, log: FunctionLog, concurrency: int):
        self.spec = spec
        self.log = log
        self.limiter = Limiter(concurrency, spec.queue_wait)
        u = urlsplit(spec.endpoint)
        self.tls = u.scheme == "https"
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (443 if self.tls else 80)
        self.host_header = u.netloc
        base = (u.path or "").rstrip("/")
        self.raw_path = f"{base}/2015-03-31/functions/{spec.function_name}/invocations"
        self.path = f"{base}/2015-03-31/functions/{quote(spec.function_name, safe='')}/invocations"
        self.idle: list = []

    async def _connect(self):
        if self.idle:
            return self.idle.pop()
        ctx = ssl.create_default_context() if self.tls else None
        return await asyncio.open_connection(self.host, self.port, ssl=ctx,
                                             server_hostname=self.host if self.tls else None)

    async def _post(self, headers: dict, body: bytes) -> tuple[int, dict, bytes]:
        creds = self.spec.credentials
        if creds and creds.get("access_key_id"):
            headers.update(sign("POST", self.host_header, self.raw_path, "", headers, body,
                                access_key=creds["access_key_id"], secret_key=creds.get("secret_access_key", ""),
                                region=creds.get("region") or self.spec.region,
                                session_token=creds.get("session_token")))
        for attempt in (0, 1):
            reused = bool(self.idle)
            reader, writer = await self._connect()
            try:
                head = [f"POST {self.path} HTTP/1.1", f"Host: {self.host_header}",
                        f"Content-Length: {len(body)}"] + [f"{k}: {v}" for k, v in headers.items()]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
                status, rh, data = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError, _HttpError):
                writer.close()
                if reused and attempt == 0:
                    continue      # a stale keep-alive connection: retry once on a new one
                raise
            except BaseException:
                writer.close()
                raise
            if rh.get("connection", "").lower() == "close":
                writer.close()
            else:
                self.idle.append((reader, writer))
            return status, rh, data
        raise _HttpError("unreachable")

    async def invoke(self, event, request_id: str, client_context=None, identity=None) -> Result:
        spec = self.spec
        payload = event if isinstance(event, (bytes, bytearray)) else orjson.dumps(event)
        await self.limiter.acquire()
        try:
            headers = {"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse",
                       "X-Amz-Log-Type": "Tail"}
            if client_context:
                headers["X-Amz-Client-Context"] = base64.b64encode(orjson.dumps(client_context)).decode()
            t0 = time.perf_counter()
            status = None
            output = ""
            try:
                st, rh, data = await asyncio.wait_for(self._post(headers, bytes(payload)), spec.timeout)
            except asyncio.TimeoutError:
                etype, msg = timeout_message(request_id, spec.timeout)
                res, status = error_result(etype, msg, request_id), "timeout"
                output = msg
            except (OSError, asyncio.IncompleteReadError, _HttpError) as e:
                res, status = error_result("Runtime.RemoteError", f"RequestId: {request_id} Error: "
                                           "remote endpoint unreachable", request_id), "error"
                output = f"remote endpoint {spec.endpoint} failed: {type(e).__name__}: {e}"
            else:
                if st == 429:
                    raise Throttled()
                tail = rh.get("x-amz-log-result")
                if tail:
                    try:
                        output = base64.b64decode(tail).decode("utf-8", "replace")
                    except ValueError:
                        output = ""
                if 200 <= st < 300:
                    ferr = rh.get("x-amz-function-error")
                    res = Result(payload=data, error=ferr or None, request_id=request_id)
                    if ferr:
                        status = "error"
                else:
                    res, status = error_result("Runtime.RemoteError", f"RequestId: {request_id} Error: "
                                               f"remote endpoint answered {st}", request_id), "error"
                    output += f"\nremote endpoint answered {st}: {data[:500].decode('utf-8', 'replace')}"
            dur = (time.perf_counter() - t0) * 1000
            res.log = self.log.record(request_id, output, dur, None, None, status)
            return res
        finally:
            self.limiter.release()

    async def close(self) -> None:
        for _, w in self.idle:
            w.close()
        self.idle.clear()


async def _read_response(reader) -> tuple[int, dict, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise _HttpError("bad status line")
    status = int(parts[1])
    headers = {}
    for ln in lines[1:]:
        if ln:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks = []
        while True:
            n = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if n == 0:
                await reader.readuntil(b"\r\n")
                break
            chunks.append(await reader.readexactly(n))
            await reader.readexactly(2)
        return status, headers, b"".join(chunks)
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if status in (204, 304) or 100 <= status < 200:
        return status, headers, b""
    headers["connection"] = "close"
    return status, headers, await reader.read()
