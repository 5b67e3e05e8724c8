"""proxy.upstream against real loopback servers, on stdlib asyncio and on uvloop.

Each test starts a small asyncio server (raw stream I/O, hand-written responses) on
a free 127.0.0.1 port or a unix socket, in the same event loop as the client.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import struct
import tempfile
import time
import tracemalloc
from typing import Any, Awaitable, Callable

import pytest
import uvloop

from proxy.upstream import (
    BodyLengthError,
    ConnectError,
    PoolSettings,
    ProtocolError,
    ResetError,
    ResponseTooLarge,
    UpstreamError,
    UpstreamPool,
    UpstreamTimeout,
)
from proxy.upstream.protocol import HIGH_WATER

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


@pytest.fixture(params=sorted(LOOPS))
def run(request: Any) -> Callable[[Callable[[], Awaitable[Any]]], Any]:
    factory = LOOPS[request.param]

    def _run(fn: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
        async def main() -> Any:
            return await asyncio.wait_for(fn(), timeout)

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main())

    return _run


# -- a tiny scriptable HTTP/1.1 server ------------------------------------------------


class Request:
    def __init__(self, method: str, target: str, version: str, headers: list[tuple[str, str]], body: bytes):
        self.method, self.target, self.version, self.headers, self.body = method, target, version, headers, body

    def header(self, name: str) -> str | None:
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None


async def read_head(reader: asyncio.StreamReader) -> tuple[str, str, str, list[tuple[str, str]]] | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    lines = raw[:-4].decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    headers = []
    for line in lines[1:]:
        n, _, v = line.partition(":")
        headers.append((n, v.strip()))
    return method, target, version, headers


async def read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]], sink: list[int] | None = None) -> bytes:
    h = {n.lower(): v for n, v in headers}
    if h.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            data = await reader.readexactly(size + 2)
            if sink is not None:
                sink[0] += size
                parts.append(b"")
            else:
                parts.append(data[:-2])
        return b"".join(parts)
    n = int(h.get("content-length", "0"))
    if sink is None:
        return await reader.readexactly(n)
    left = n
    while left:
        data = await reader.read(min(left, 65536))
        if not data:
            raise ConnectionError("eof")
        left -= len(data)
        sink[0] += len(data)
    return b""


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    head = await read_head(reader)
    if head is None:
        return None
    body = await read_body(reader, head[3])
    return Request(*head, body)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Server"], Awaitable[None]]


class Server:
    """Counts connections and concurrency; `handler` scripts each connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self.requests: list[Request] = []
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self.path: str | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        t = asyncio.current_task()
        assert t is not None
        self._tasks.add(t)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # client went away, or stop() cancelled us
        finally:
            self._tasks.discard(t)
            writer.close()

    async def start(self, unix: bool = False) -> "Server":
        if unix:
            self.path = os.path.join(tempfile.mkdtemp(), "up.sock")
            self.server = await asyncio.start_unix_server(self._on_conn, self.path)
        else:
            self.server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]
        return self

    def pool(self, **kw: Any) -> UpstreamPool:
        if self.path:
            return UpstreamPool("localhost", 0, unix_path=self.path, **kw)
        return UpstreamPool("127.0.0.1", self.port, **kw)

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.sleep(0)


def response(status: int = 200, body: bytes = b"", headers: str = "", reason: str = "OK") -> bytes:
    return f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n{headers}\r\n".encode() + body


def keepalive_handler(make: Callable[[Request], bytes]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        while True:
            req = await read_request(reader)
            if req is None:
                return
            srv.requests.append(req)
            writer.write(make(req))
            await writer.drain()

    return handler


def echo(req: Request) -> bytes:
    return response(200, f"{req.method} {req.target} {len(req.body)}".encode())


async def get(pool: UpstreamPool, target: str = "/", method: str = "GET", body: Any = None, **kw: Any) -> tuple[int, bytes]:
    kw.setdefault("timeout", 5.0)
    resp = await pool.request(method, target, [("Host", "up")], body, **kw)
    data = await resp.read()
    await resp.aclose()
    return resp.status, data


def rst_close(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- keep-alive and framing -------------------------------------------------------------


def test_keepalive_reuse(run: Any) -> None:
    async def main() -> None:
        srv = await Server(keepalive_handler(echo)).start()
        pool = srv.pool()
        for i in range(5):
            assert await get(pool, f"/r/{i}?q=a%20b") == (200, f"GET /r/{i}?q=a%20b 0".encode())
        assert srv.connections == 1
        assert pool.stats() == {"open": 1, "idle": 1, "in_use": 0, "connecting": 0, "waiting": 0}
        await pool.close()
        await srv.stop()

    run(main)


def test_connection_close_not_reused(run: Any) -> None:
    async def main() -> None:
        srv = await Server(keepalive_handler(lambda r: response(200, b"x", "Connection: close\r\n"))).start()
        pool = srv.pool()
        for _ in range(3):
            assert await get(pool) == (200, b"x")
        assert srv.connections == 3
        await pool.close()
        await srv.stop()

    run(main)


def test_http10_response_not_reused_unless_keepalive(run: Any) -> None:
    async def main() -> None:
        srv = await Server(keepalive_handler(lambda r: b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")).start()
        pool = srv.pool()
        assert await get(pool) == (200, b"ok")
        assert await get(pool) == (200, b"ok")
        assert srv.connections == 2
        srv2 = await Server(
            keepalive_handler(lambda r: b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok")
        ).start()
        pool2 = srv2.pool()
        for _ in range(3):
            assert await get(pool2) == (200, b"ok")
        assert srv2.connections == 1
        await pool.close()
        await pool2.close()
        await srv.stop()
        await srv2.stop()

    run(main)


def test_content_length_response(run: Any) -> None:
    async def main() -> None:
        body = os.urandom(100_000)
        srv = await Server(keepalive_handler(lambda r: response(200, body, "X-Thing: A b\r\n"))).start()
        pool = srv.pool()
        resp = await pool.request("GET", "/", [("Host", "up")], None, timeout=5)
        assert resp.status == 200 and resp.http_version == "1.1"
        assert resp.content_length == 100_000 and not resp.chunked and resp.has_body()
        assert ("X-Thing", "A b") in resp.headers
        assert await resp.read() == body
        await resp.aclose()
        assert pool.stats()["idle"] == 1
        await pool.close()
        await srv.stop()

    run(main)


def test_chunked_response(run: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        while await read_request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for part in (b"hello ", b"chunked ", b"world"):
                writer.write(b"%x;ext=1\r\n%b\r\n" % (len(part), part))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\nX-Trailer: t\r\n\r\n")

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        resp = await pool.request("GET", "/", [("Host", "up")], None, timeout=5)
        assert resp.chunked and resp.content_length is None
        chunks = [c async for c in resp]
        assert b"".join(chunks) == b"hello chunked world"
        assert len(chunks) >= 2  # streamed, not buffered to the end
        assert ("X-Trailer", "t") not in resp.headers
        assert await get(pool) == (200, b"hello chunked world")
        assert srv.connections == 1
        await pool.close()
        await srv.stop()

    run(main)


def test_read_until_close(run: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"close")
        await writer.drain()

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        resp = await pool.request("GET", "/", [("Host", "up")], None, timeout=5)
        assert resp.content_length is None and not resp.chunked and resp.has_body()
        assert await resp.read() == b"until close"
        assert await get(pool) == (200, b"until close")
        assert srv.connections == 2
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


def test_no_body_responses_keep_connection(run: Any) -> None:
    def make(req: Request) -> bytes:
        if req.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"
        if req.target == "/204":
            return b"HTTP/1.1 204 No Content\r\n\r\n"
        if req.target == "/304":
            return b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
        return response(200, b"after")

    async def main() -> None:
        srv = await Server(keepalive_handler(make)).start()
        pool = srv.pool()
        for method, target, status in (("HEAD", "/", 200), ("GET", "/204", 204), ("GET", "/304", 304), ("HEAD", "/", 200)):
            resp = await pool.request(method, target, [("Host", "up")], None, timeout=5)
            assert resp.status == status
            assert not resp.has_body()
            assert await resp.read() == b""
            assert [c async for c in resp] == []
            if method == "HEAD":
                assert resp.content_length == 1234
        assert await get(pool) == (200, b"after")
        assert srv.connections == 1
        await pool.close()
        await srv.stop()

    run(main)


def test_interim_1xx_skipped(run: Any) -> None:
    srv_resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + response(201, b"made")

    async def main() -> None:
        srv = await Server(keepalive_handler(lambda r: srv_resp)).start()
        pool = srv.pool()
        resp = await pool.request("POST", "/", [("Host", "up")], b"x", timeout=5)
        assert resp.status == 201
        assert [n for n, _ in resp.headers] == ["Content-Length"]
        assert await resp.read() == b"made"
        assert await get(pool) == (201, b"made")
        assert srv.connections == 1
        await pool.close()
        await srv.stop()

    run(main)


# -- request framing -------------------------------------------------------------------


def test_request_framing(run: Any) -> None:
    async def gen(parts: list[bytes]) -> Any:
        for p in parts:
            yield p

    async def main() -> None:
        srv = await Server(keepalive_handler(echo)).start()
        pool = srv.pool()
        hdrs = [("Host", "up"), ("content-length", "999"), ("X-A", "1")]
        resp = await pool.request("POST", "/b", hdrs, b"hello", timeout=5)
        await resp.read()
        resp = await pool.request("POST", "/n", [("Host", "up")], None, timeout=5)
        await resp.read()
        resp = await pool.request("GET", "/g", [("Host", "up")], None, timeout=5)
        await resp.read()
        resp = await pool.request("PUT", "/c", [("Host", "up")], gen([b"ab", b"", b"cde"]), timeout=5)
        assert await resp.read() == b"PUT /c 5"
        resp = await pool.request("PUT", "/l", [("Host", "up")], gen([b"ab", b"cde"]), timeout=5, body_length=5)
        assert await resp.read() == b"PUT /l 5"
        big = os.urandom(200_000)
        resp = await pool.request("POST", "/big", [("Host", "up")], big, timeout=5)
        assert await resp.read() == b"POST /big 200000"
        r = srv.requests
        assert r[0].body == b"hello" and r[0].header("Content-Length") == "5"
        assert [n.lower() for n, _ in r[0].headers].count("content-length") == 1
        assert r[0].header("X-A") == "1" and r[0].version == "HTTP/1.1"
        assert r[1].header("Content-Length") == "0"
        assert r[2].header("Content-Length") is None and r[2].header("Transfer-Encoding") is None
        assert r[3].header("Transfer-Encoding") == "chunked" and r[3].body == b"abcde"
        assert r[4].header("Content-Length") == "5" and r[4].header("Transfer-Encoding") is None
        assert r[5].body == big
        assert srv.connections == 1
        await pool.close()
        await srv.stop()

    run(main)


def test_header_injection_refused(run: Any) -> None:
    async def main() -> None:
        pool = UpstreamPool("127.0.0.1", 9)
        for headers, target in (
            ([("X-A", "a\r\nX-Evil: 1")], "/"),
            ([("X-A", "a\nb")], "/"),
            ([("X-A\r\nX-B", "a")], "/"),
            ([("X-A", "a")], "/ HTTP/1.1\r\nX: y"),
            ([("X-A", "a")], "/a b"),
        ):
            with pytest.raises(ValueError):
                await pool.request("GET", target, headers, None, timeout=1)
        assert pool.stats()["open"] == 0

    run(main)


def test_body_length_mismatch(run: Any) -> None:
    async def gen() -> Any:
        yield b"abc"

    async def main() -> None:
        srv = await Server(keepalive_handler(echo)).start()
        pool = srv.pool()
        with pytest.raises(BodyLengthError):
            await pool.request("PUT", "/", [("Host", "up")], gen(), timeout=5, body_length=10)
        with pytest.raises(BodyLengthError):
            await pool.request("PUT", "/", [("Host", "up")], gen(), timeout=5, body_length=2)
        assert pool.stats()["open"] == 0
        assert await get(pool) == (200, b"GET / 0")
        await pool.close()
        await srv.stop()

    run(main)


# -- failures -----------------------------------------------------------------------------


def test_refused_port_is_connect_error(run: Any) -> None:
    async def main() -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        pool = UpstreamPool("127.0.0.1", port)
        with pytest.raises(ConnectError) as ei:
            await get(pool)
        assert ei.value.status == 502 and ei.value.kind == "connect"
        assert pool.stats()["open"] == 0
        pool_unix = UpstreamPool("x", 0, unix_path="/nonexistent/dir/up.sock")
        with pytest.raises(ConnectError):
            await get(pool_unix)

    run(main)


def test_connect_timeout(run: Any) -> None:
    # A listening socket with a full accept backlog never completes new handshakes
    # on Linux, which gives a deterministic connect timeout without the network.
    async def main() -> None:
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(0)
        port = lsock.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                c = socket.socket()
                c.setblocking(False)
                try:
                    c.connect(("127.0.0.1", port))
                except BlockingIOError:
                    pass
                fillers.append(c)
            await asyncio.sleep(0.05)
            pool = UpstreamPool("127.0.0.1", port, settings=PoolSettings(connect_timeout=0.2))
            t0 = time.monotonic()
            with pytest.raises(ConnectError) as ei:
                await get(pool, timeout=5)
            assert ei.value.kind == "connect_timeout"
            assert time.monotonic() - t0 < 1.5
            # The integration timeout shorter than connect_timeout -> 504.
            pool2 = UpstreamPool("127.0.0.1", port, settings=PoolSettings(connect_timeout=5))
            with pytest.raises(UpstreamTimeout) as ei2:
                await get(pool2, timeout=0.2)
            assert ei2.value.status == 504
            assert pool.stats()["open"] == 0 and pool2.stats()["open"] == 0
        finally:
            for c in fillers:
                c.close()
            lsock.close()

    run(main)


def test_garbage_response_is_protocol_error_and_not_reused(run: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        while await read_request(reader):
            if srv.connections == 1:
                writer.write(b"SSH-2.0-OpenSSH_9.0\r\n\r\n")
            else:
                writer.write(response(200, b"fine"))

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        with pytest.raises(ProtocolError) as ei:
            await get(pool)
        assert ei.value.status == 502
        assert pool.stats()["open"] == 0
        assert await get(pool) == (200, b"fine")
        assert srv.connections == 2
        await pool.close()
        await srv.stop()

    run(main)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        response(200, b"a") + b"HTTP/1.1 200 OK\r\n",  # unsolicited second response
    ],
    ids=["cl+te", "dup-cl", "cl-list", "obs-fold", "nul", "bare-cr", "bare-lf", "bad-name",
         "bad-status", "http2", "bad-chunk", "upgrade", "unsolicited"],
)
def test_malformed_responses(run: Any, raw: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        while await read_request(reader):
            writer.write(raw)

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        with pytest.raises(ProtocolError):
            resp = await pool.request("GET", "/", [("Host", "up")], None, timeout=5)
            body = await resp.read()
            # the unsolicited case: the first response is fine, the connection is not
            assert body == b"a"
            await asyncio.sleep(0.05)
            assert pool.stats()["open"] == 0
            raise ProtocolError("ok")
        await asyncio.sleep(0.01)
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


def test_stall_times_out(run: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-")  # part of a head, then nothing
        await asyncio.sleep(10)

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout) as ei:
            await get(pool, timeout=0.3)
        elapsed = time.monotonic() - t0
        assert 0.25 <= elapsed < 1.0
        assert ei.value.status == 504
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


def test_body_read_timeout_and_truncation(run: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        req = await read_request(reader)
        assert req is not None
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40)
        await writer.drain()
        if req.target == "/stall":
            await asyncio.sleep(10)
        # else: close early -> truncated body

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        resp = await pool.request("GET", "/stall", [("Host", "up")], None, timeout=5, read_timeout=0.2)
        got = b""
        t0 = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            async for c in resp:
                got += c
        assert got == b"x" * 40 and time.monotonic() - t0 < 1.0
        resp = await pool.request("GET", "/trunc", [("Host", "up")], None, timeout=5)
        with pytest.raises(ResetError) as ei:
            await resp.read()
        assert ei.value.kind == "body_truncated"
        await asyncio.sleep(0.01)
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


def test_reset_mid_head(run: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await writer.drain()
        await asyncio.sleep(0.02)
        if srv.connections == 1:
            rst_close(writer)
        # else: plain FIN

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        for _ in range(2):
            with pytest.raises(ResetError) as ei:
                await get(pool)
            assert ei.value.status == 502
            assert ei.value.request_sent and ei.value.response_started
        assert srv.connections == 2  # a fresh connection is never retried
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


def test_half_read_response_closes_connection(run: Any) -> None:
    body = b"y" * (2 * HIGH_WATER)

    async def main() -> None:
        srv = await Server(keepalive_handler(lambda r: response(200, body))).start()
        pool = srv.pool()
        resp = await pool.request("GET", "/", [("Host", "up")], None, timeout=5)
        first = await resp.__anext__()
        assert 0 < len(first) < len(body)
        await resp.aclose()
        assert pool.stats()["open"] == 0
        with pytest.raises(ResetError):
            await resp.__anext__()
        assert await get(pool) == (200, body)
        assert srv.connections == 2
        # read(limit) on a too large body also closes the connection
        resp = await pool.request("GET", "/", [("Host", "up")], None, timeout=5)
        with pytest.raises(ResponseTooLarge):
            await resp.read(limit=1000)
        assert pool.stats()["open"] == 0
        # an abandoned, unread response does not pin its connection
        resp = await pool.request("GET", "/", [("Host", "up")], None, timeout=5)
        del resp
        gc.collect()
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


# -- streaming with bounded memory --------------------------------------------------------

MB20 = 20 * 1024 * 1024


def test_streaming_download_20mb_bounded(run: Any) -> None:
    block = b"z" * 65536

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        while await read_request(reader):
            writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {MB20}\r\n\r\n".encode())
            for _ in range(MB20 // len(block)):
                writer.write(block)
                await writer.drain()

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        gc.collect()
        tracemalloc.start()
        try:
            resp = await pool.request("GET", "/", [("Host", "up")], None, timeout=10)
            total = 0
            biggest = 0
            n = 0
            async for chunk in resp:
                total += len(chunk)
                biggest = max(biggest, len(chunk))
                n += 1
                if n % 16 == 0:
                    await asyncio.sleep(0.001)  # a slow consumer
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert total == MB20
        assert biggest <= HIGH_WATER + 256 * 1024  # high water + one socket read
        assert peak < 6 * 1024 * 1024, peak
        await resp.aclose()
        assert pool.stats()["idle"] == 1
        await pool.close()
        await srv.stop()

    run(main, timeout=60)


@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
def test_streaming_upload_20mb_bounded(run: Any, declared: bool) -> None:
    block = b"u" * 65536
    received = [0]
    seen_before_end: list[int] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        head = await read_head(reader)
        assert head is not None
        srv.requests.append(Request(*head, b""))
        await read_body(reader, head[3], sink=received)
        writer.write(response(200, str(received[0]).encode()))

    async def producer() -> Any:
        for i in range(MB20 // len(block)):
            if i == MB20 // len(block) - 1:
                seen_before_end.append(received[0])
            yield block

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        gc.collect()
        tracemalloc.start()
        try:
            resp = await pool.request(
                "PUT", "/up", [("Host", "up")], producer(), timeout=20, body_length=MB20 if declared else None
            )
            body = await resp.read()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert body == str(MB20).encode()
        # the server had most of the body before the producer made its last block
        assert seen_before_end[0] > MB20 // 2
        assert peak < 6 * 1024 * 1024, peak
        te = srv.requests[0].header("Transfer-Encoding")
        assert (te is None) if declared else (te == "chunked")
        await pool.close()
        await srv.stop()

    run(main, timeout=60)


def test_early_response_during_upload(run: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        await read_head(reader)
        writer.write(response(413, b"too big", "Connection: close\r\n"))
        await writer.drain()
        await asyncio.sleep(0.5)

    produced = [0]

    async def producer() -> Any:
        for _ in range(10_000):
            produced[0] += 1
            yield b"p" * 65536
            await asyncio.sleep(0)

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        resp = await pool.request("POST", "/", [("Host", "up")], producer(), timeout=5)
        assert resp.status == 413
        assert await resp.read() == b"too big"
        assert produced[0] < 10_000
        await asyncio.sleep(0.01)
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


# -- targets and limits -------------------------------------------------------------------


def test_unix_socket_target(run: Any) -> None:
    async def main() -> None:
        srv = await Server(keepalive_handler(echo)).start(unix=True)
        pool = srv.pool()
        for _ in range(3):
            assert await get(pool, "/u", "POST", b"abc") == (200, b"POST /u 3")
        assert srv.connections == 1
        await pool.close()
        await srv.stop()

    run(main)


def test_max_connections_respected(run: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        while True:
            req = await read_request(reader)
            if req is None:
                return
            srv.active += 1
            srv.max_active = max(srv.max_active, srv.active)
            await asyncio.sleep(0.03)
            srv.active -= 1
            writer.write(response(200, req.target.encode()))

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool(settings=PoolSettings(max_connections=3))

        async def one(i: int) -> tuple[int, bytes]:
            return await get(pool, f"/{i}")

        tasks = [asyncio.ensure_future(one(i)) for i in range(12)]
        await asyncio.sleep(0.01)
        st = pool.stats()
        assert st["open"] == 3 and st["waiting"] == 9
        results = await asyncio.gather(*tasks)
        assert results == [(200, f"/{i}".encode()) for i in range(12)]
        assert srv.max_active == 3 and srv.connections == 3
        # a request that cannot get a slot in time -> 504
        blockers = [asyncio.ensure_future(one(i)) for i in range(3)]
        await asyncio.sleep(0.005)
        with pytest.raises(UpstreamTimeout) as ei:
            await get(pool, timeout=0.01)
        assert ei.value.kind == "pool_timeout"
        await asyncio.gather(*blockers)
        assert pool.stats() == {"open": 3, "idle": 3, "in_use": 0, "connecting": 0, "waiting": 0}
        await pool.close()
        assert pool.stats()["open"] == 0
        await srv.stop()

    run(main)


def test_waiter_cancelled_does_not_leak_slot(run: Any) -> None:
    async def main() -> None:
        srv = await Server(keepalive_handler(echo)).start()
        pool = srv.pool(settings=PoolSettings(max_connections=1))
        t1 = asyncio.ensure_future(get(pool, "/1"))
        t2 = asyncio.ensure_future(get(pool, "/2"))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        t2.cancel()
        assert await t1 == (200, b"GET /1 0")
        with pytest.raises(asyncio.CancelledError):
            await t2
        assert await get(pool, "/3") == (200, b"GET /3 0")
        assert pool.stats()["open"] == 1 and pool.stats()["in_use"] == 0
        await pool.close()
        await srv.stop()

    run(main)


def test_idle_timeout_and_max_idle(run: Any) -> None:
    async def main() -> None:
        srv = await Server(keepalive_handler(echo)).start()
        pool = srv.pool(settings=PoolSettings(idle_timeout=0.1, max_idle=2))
        await asyncio.gather(*(get(pool, f"/{i}") for i in range(4)))
        assert pool.stats()["idle"] == 2 and pool.stats()["open"] == 2
        await asyncio.sleep(0.25)
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


def test_server_closing_idle_connection_is_noticed(run: Any) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        req = await read_request(reader)
        writer.write(response(200, b"once"))  # claims keep-alive, then closes
        await writer.drain()

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        assert await get(pool) == (200, b"once")
        await asyncio.sleep(0.05)
        assert pool.stats()["open"] == 0
        assert await get(pool) == (200, b"once")
        await pool.close()
        await srv.stop()

    run(main)


# -- stale keep-alive retry -----------------------------------------------------------------


def stale_handler(second: str) -> Handler:
    """First request on each connection is answered; on the second the server
    closes without answering (or, with second="partial", after part of a head)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        req = await read_request(reader)
        if req is None:
            return
        srv.requests.append(req)
        writer.write(response(200, f"c{srv.connections}".encode()))
        await writer.drain()
        req = await read_head(reader)
        if req is None:
            return
        srv.requests.append(Request(*req, b""))
        if second == "partial":
            writer.write(b"HTTP/1.1 200")
            await writer.drain()
        rst_close(writer)

    return handler


def test_stale_keepalive_retried_once(run: Any) -> None:
    async def main() -> None:
        srv = await Server(stale_handler("close")).start()
        pool = srv.pool()
        assert await get(pool) == (200, b"c1")
        assert await get(pool, method="PUT", body=b"data") == (200, b"c2")
        assert srv.connections == 2
        assert srv.requests[-1].method == "PUT" and srv.requests[-1].body == b"data"
        await pool.close()
        await srv.stop()
        # a POST that may have reached the server is never replayed
        srv = await Server(stale_handler("close")).start()
        pool = srv.pool()
        assert await get(pool) == (200, b"c1")
        with pytest.raises(ResetError):
            await get(pool, method="POST", body=b"data")
        assert srv.connections == 1
        await pool.close()
        await srv.stop()

    run(main)


def test_stale_keepalive_not_retried_after_response_bytes_or_streamed_body(run: Any) -> None:
    async def gen() -> Any:
        yield b"abc"

    async def main() -> None:
        srv = await Server(stale_handler("partial")).start()
        pool = srv.pool()
        assert await get(pool) == (200, b"c1")
        with pytest.raises(ResetError) as ei:
            await get(pool)
        assert ei.value.response_started
        assert srv.connections == 1

        srv2 = await Server(stale_handler("close")).start()
        pool2 = srv2.pool()
        assert await get(pool2) == (200, b"c1")
        with pytest.raises(ResetError) as ei:
            await get(pool2, method="PUT", body=gen())
        assert not ei.value.response_started
        assert srv2.connections == 1
        await pool.close()
        await pool2.close()
        await srv.stop()
        await srv2.stop()

    run(main)


def test_closed_pool_refuses(run: Any) -> None:
    async def main() -> None:
        srv = await Server(keepalive_handler(echo)).start()
        pool = srv.pool()
        assert await get(pool) == (200, b"GET / 0")
        await pool.close()
        assert pool.stats()["open"] == 0
        with pytest.raises(ConnectError):
            await get(pool)
        await srv.stop()

    run(main)


def test_errors_map_to_gateway_statuses() -> None:
    assert issubclass(UpstreamTimeout, UpstreamError) and UpstreamTimeout("x").status == 504
    for cls in (ConnectError, ResetError, ProtocolError, ResponseTooLarge):
        assert issubclass(cls, UpstreamError) and cls("x").status == 502
    assert ConnectError("x", kind="connect_timeout").kind == "connect_timeout"


def test_source_address(run: Any) -> None:
    peers: list[tuple[str, int]] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        peers.append(writer.get_extra_info("peername")[:2])
        await keepalive_handler(echo)(reader, writer, srv)

    async def main() -> None:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        local_port = s.getsockname()[1]
        s.close()
        srv = await Server(handler).start()
        pool = srv.pool(source_address=("127.0.0.1", local_port))
        assert await get(pool) == (200, b"GET / 0")
        assert peers == [("127.0.0.1", local_port)]
        await pool.close()
        await srv.stop()

    run(main)


@pytest.mark.parametrize("extra", [
    "",
    "Server: up\r\nX-A: 1\r\nX-A: 2\r\n",
    "Connection: keep-alive, X-Secret, x-other\r\nX-Secret: s\r\nX-OTHER: o\r\nX-Kept: k\r\n",
    "Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nTrailer: X-T\r\nUpgrade: h2c\r\n"
    "Proxy-Connection: keep-alive\r\nTE: trailers\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n",
    "Transfer-Encoding: chunked\r\n",
])
def test_forward_headers_are_the_stripped_headers(run: Any, extra: str) -> None:
    """What the parser sets aside for the client while it reads the head is exactly the
    response's headers minus hop-by-hop ones, those named in Connection and Content-Length."""
    from proxy.headers import strip_response

    def make(r: Request) -> bytes:
        if "chunked" in extra:
            return (b"HTTP/1.1 200 OK\r\n" + extra.encode() + b"\r\n2\r\nhi\r\n0\r\n\r\n")
        return response(200, b"hi", extra)

    async def main() -> None:
        srv = await Server(keepalive_handler(make)).start()
        pool = srv.pool()
        for _ in range(2):      # a fresh connection, then a reused one
            resp = await pool.request("GET", "/", [("host", "x")], None, timeout=5)
            fwd = resp.forward_headers()
            assert fwd == strip_response(resp.headers)
            names = {k.lower() for k, _ in fwd}
            assert not names & {"connection", "keep-alive", "content-length", "transfer-encoding",
                                "x-secret", "x-other", "te", "upgrade", "trailer"}
            if "X-Kept" in extra:
                assert ("X-Kept", "k") in fwd
            assert await resp.read() == b"hi"
        await pool.close()
        await srv.stop()

    run(main)


def test_head_timeout_follows_each_requests_own_deadline_on_a_reused_connection(run: Any) -> None:
    """One head timer per connection: a later request with a shorter timeout still times
    out on time, and one with a longer timeout is not cut at an earlier request's deadline."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        while True:
            req = await read_request(reader)
            if req is None:
                return
            delay = float(req.target.rsplit("/", 1)[1])
            if delay:
                await asyncio.sleep(delay)
            writer.write(response(200, b"ok"))
            await writer.drain()

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool(settings=PoolSettings(max_connections=1))
        loop = asyncio.get_running_loop()
        # a long deadline first (the timer is set for it) ...
        r = await pool.request("GET", "/d/0", [], None, timeout=5.0)
        assert await r.read() == b"ok"
        # ... then a short one on the same connection: must not wait for the long one
        t0 = loop.time()
        with pytest.raises(UpstreamTimeout):
            await pool.request("GET", "/d/3", [], None, timeout=0.2)
        assert loop.time() - t0 < 1.0
        # a short deadline first, then a longer one that the upstream meets after the
        # short one would have expired
        r = await pool.request("GET", "/d/0", [], None, timeout=0.1)
        assert await r.read() == b"ok"
        r = await pool.request("GET", "/d/0.4", [], None, timeout=2.0)
        assert r.status == 200 and await r.read() == b"ok"
        assert srv.connections == 2     # the timed-out connection was not reused
        await pool.close()
        await srv.stop()

    run(main)
