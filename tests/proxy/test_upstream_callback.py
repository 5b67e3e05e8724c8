"""UpstreamPool.start(): the callback mode of the upstream client, on asyncio and on uvloop.

``pool.start(method, target, headers, timeout, cb, arg)`` writes a body-less request on an
idle keep-alive connection and returns at once (False, having sent nothing, when there is
none); ``cb(arg, resp, exc, retry)`` is then called exactly once from the protocol callbacks:
with the response once its final head is in (its body maybe whole already), or with the
UpstreamError that ended the request before that, and whether it may be sent again on a
fresh connection (``pool.request(..., fresh=True)``).

Same loopback servers as tests/proxy/test_upstream.py (its helpers are reused). Every test
warms the pool with one ordinary request first, so that an idle connection exists.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Awaitable, Callable

import pytest

from proxy.upstream import PoolSettings, ProtocolError, ResetError, UpstreamPool, UpstreamTimeout
from proxy.upstream.protocol import HIGH_WATER, _h1
from tests.proxy.test_upstream import (  # noqa: F401  (run: the fixture)
    Request,
    Server,
    read_head,
    read_request,
    response,
    rst_close,
    run,
)

HOST = [("Host", "up")]


# -- helpers ---------------------------------------------------------------------------


class Recorder:
    """A start() callback that records each call (and what could only be seen during it)."""

    def __init__(self, pool: UpstreamPool | None = None) -> None:
        self.loop = asyncio.get_running_loop()
        self.pool = pool
        self.calls: list[dict[str, Any]] = []
        self.fut: asyncio.Future[dict[str, Any]] = self.loop.create_future()

    def __call__(self, arg: Any, resp: Any, exc: Any, retry: Any) -> None:
        info: dict[str, Any] = {
            "arg": arg, "resp": resp, "exc": exc, "retry": retry,
            "task": asyncio.current_task(), "t": self.loop.time(),
        }
        if resp is not None:
            info["body_now"] = resp.body_now()
        if self.pool is not None:
            info["stats"] = self.pool.stats()
        self.calls.append(info)
        if not self.fut.done():
            self.fut.set_result(info)

    async def wait(self, timeout: float = 3.0, settle: float = 0.05) -> dict[str, Any]:
        """The first call; then give a second (wrong) call the time to happen."""
        info = await asyncio.wait_for(asyncio.shield(self.fut), timeout)
        await asyncio.sleep(settle)
        assert len(self.calls) == 1, self.calls
        # told from a protocol callback (data_received / connection_lost / a timer), not from
        # inside start() nor from a task
        assert info["task"] is None
        return info


async def started(script, target: str, timeout: float = 2.0, warm_timeout: float | None = None):
    """A server running ``script``, a pool warmed by one request (so it has an idle
    connection), and a Recorder for one ``start()`` of ``GET target``, already sent."""
    srv = await Server(scripted(script)).start()
    pool = srv.pool()
    if warm_timeout is None:
        await warm(pool)
    else:
        await warm(pool, timeout=warm_timeout)
    rec = Recorder(pool)
    assert pool.start("GET", target, HOST, timeout, rec, None) is True
    return srv, pool, rec


async def never_called(rec: Recorder, wait: float = 0.05) -> None:
    await asyncio.sleep(wait)
    assert rec.calls == []


Script = Callable[[Request, asyncio.StreamWriter, Server, int], Awaitable[bool]]


def scripted(script: Script) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter, Server], Awaitable[None]]:
    """A keep-alive handler: each request (tagged with its connection's number in
    ``req.conn``) is logged in ``srv.requests`` and answered by ``script``, which returns
    False to close the connection."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        n = srv.connections
        while True:
            req = await read_request(reader)
            if req is None:
                return
            req.conn = n  # type: ignore[attr-defined]
            srv.requests.append(req)
            if not await script(req, writer, srv, n):
                return

    return handler


def answer(make: Callable[[Request], bytes]) -> Script:
    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        writer.write(make(req))
        await writer.drain()
        return True

    return script


async def warm(pool: UpstreamPool, target: str = "/warm", timeout: float = 5.0) -> bytes:
    """One ordinary request, body read: the pool knows its loop and has an idle connection."""
    resp = await pool.request("GET", target, HOST, None, timeout=timeout)
    data = await resp.read()
    await resp.aclose()
    assert pool.stats()["idle"] == 1
    return data


def conns_of(srv: Server) -> list[int]:
    return [r.conn for r in srv.requests]  # type: ignore[attr-defined]


# -- 1. when start() refuses -------------------------------------------------------------


def test_start_refuses_without_an_idle_connection(run: Any) -> None:
    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        if req.target == "/slow":
            await asyncio.sleep(0.3)
        writer.write(response(200, b"ok"))
        await writer.drain()
        return req.target != "/bye"  # answer /bye, then close the connection

    async def main() -> None:
        srv = await Server(scripted(script)).start()
        pool = srv.pool()
        rec = Recorder(pool)
        # a pool that has not served a request does not know its loop yet
        assert pool.start("GET", "/x", HOST, 1.0, rec, "a") is False
        await never_called(rec)
        assert srv.connections == 0 and srv.requests == []
        assert pool.stats()["open"] == 0

        await warm(pool)
        # the only connection is busy with a request() ...
        task = asyncio.ensure_future(pool.request("GET", "/slow", HOST, None, timeout=5))
        await asyncio.sleep(0.05)
        assert pool.stats()["in_use"] == 1 and pool.stats()["idle"] == 0
        assert pool.start("GET", "/x", HOST, 1.0, rec, "b") is False
        resp = await asyncio.wait_for(task, 3)
        assert await resp.read() == b"ok"
        # ... or with a start()
        busy = Recorder(pool)
        assert pool.start("GET", "/first", HOST, 1.0, busy, "c") is True
        assert pool.start("GET", "/x", HOST, 1.0, rec, "d") is False
        info = await busy.wait()
        assert info["resp"].status == 200 and info["body_now"] == b"ok"
        await never_called(rec)
        assert [r.target for r in srv.requests] == ["/warm", "/slow", "/first"]

        # the only connection was closed by the server (and the client noticed)
        resp = await pool.request("GET", "/bye", HOST, None, timeout=5)
        assert await resp.read() == b"ok"
        for _ in range(100):
            if pool.stats()["open"] == 0:
                break
            await asyncio.sleep(0.01)
        assert pool.stats()["open"] == 0
        assert pool.start("GET", "/x", HOST, 1.0, rec, "e") is False
        # a closed pool
        await warm(pool)
        await pool.close()
        assert pool.start("GET", "/x", HOST, 1.0, rec, "f") is False
        await never_called(rec)
        assert [r.target for r in srv.requests] == ["/warm", "/slow", "/first", "/bye", "/warm"]
        await srv.stop()

    run(main)


# -- 2. a small response, whole with the head ---------------------------------------------


def test_small_response_body_comes_with_the_head(run: Any) -> None:
    extra = ("Connection: keep-alive, X-Internal\r\nX-Internal: secret\r\nKeep-Alive: timeout=5\r\n"
             "X-Thing: A b\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n")

    def make(req: Request) -> bytes:
        return response(201, f"{req.method} {req.target} {req.header('x-req')}".encode(), extra,
                        reason="Created")

    async def main() -> None:
        srv = await Server(scripted(answer(make))).start()
        pool = srv.pool()
        await warm(pool)
        rec = Recorder(pool)
        arg = object()
        assert pool.start("GET", "/a?b=1", HOST + [("X-Req", "one")], 2.0, rec, arg) is True
        info = await rec.wait()
        resp = info["resp"]
        assert info["arg"] is arg and info["exc"] is None and info["retry"] is False
        assert resp.status == 201 and resp.http_version == "1.1" and resp.has_body()
        assert resp.content_length == len(b"GET /a?b=1 one") and resp.keep_alive
        assert info["body_now"] == b"GET /a?b=1 one"
        assert ("X-Internal", "secret") in resp.headers
        assert resp.forward_headers() == [("X-Thing", "A b"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
        assert resp.forward_headers() == _h1.strip_response(resp.headers)
        # the connection was back in the pool when the callback ran
        assert info["stats"] == {"open": 1, "idle": 1, "in_use": 0, "connecting": 0, "waiting": 0}
        assert resp.complete
        assert await resp.read() == b""  # body_now() took it
        await resp.aclose()             # a no-op: the connection stays pooled
        assert pool.stats()["idle"] == 1

        # the same connection serves the next start(), and then request() again
        rec2 = Recorder(pool)
        assert pool.start("DELETE", "/b", HOST + [("X-Req", "two")], 2.0, rec2, 2) is True
        info2 = await rec2.wait()
        assert info2["arg"] == 2 and info2["body_now"] == b"DELETE /b two"
        resp = await pool.request("GET", "/c", HOST, None, timeout=5)
        assert await resp.read() == b"GET /c None"
        assert srv.connections == 1
        assert conns_of(srv) == [1, 1, 1, 1]
        assert [(r.method, r.target, r.body) for r in srv.requests] == [
            ("GET", "/warm", b""), ("GET", "/a?b=1", b""), ("DELETE", "/b", b""), ("GET", "/c", b"")]
        assert srv.requests[1].header("host") == "up"
        assert pool.stats() == {"open": 1, "idle": 1, "in_use": 0, "connecting": 0, "waiting": 0}
        await pool.close()
        await srv.stop()

    run(main)


def test_bodyless_methods_are_framed(run: Any) -> None:
    """POST/PUT/PATCH without a body get Content-Length: 0 (else the server would wait for
    one), GET/DELETE none; the body-less response statuses are whole with the head."""

    def make(req: Request) -> bytes:
        if req.target == "/204":
            return b"HTTP/1.1 204 No Content\r\n\r\n"
        if req.target == "/304":
            return b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
        return response(200, f"{req.method} {req.header('content-length')}".encode())

    async def main() -> None:
        srv = await Server(scripted(answer(make))).start()
        pool = srv.pool()
        await warm(pool)
        for method, target, status, body in (
            ("POST", "/", 200, b"POST 0"), ("PUT", "/", 200, b"PUT 0"), ("PATCH", "/", 200, b"PATCH 0"),
            ("GET", "/", 200, b"GET None"), ("OPTIONS", "/", 200, b"OPTIONS None"),
            ("GET", "/204", 204, b""), ("GET", "/304", 304, b""),
        ):
            rec = Recorder(pool)
            assert pool.start(method, target, HOST, 2.0, rec, None) is True
            info = await rec.wait(settle=0.01)
            assert info["resp"].status == status and info["body_now"] == body, (method, target)
            assert info["resp"].has_body() == (status == 200)
            assert info["stats"]["idle"] == 1
        assert srv.connections == 1
        await pool.close()
        await srv.stop()

    run(main)


# -- 3. a large body, sent slowly ---------------------------------------------------------


BIG = os.urandom(300 * 1024)
assert len(BIG) > HIGH_WATER  # the client pauses reading on the way


async def send_big(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
    if req.target == "/small":
        writer.write(response(200, b"small"))
        await writer.drain()
        return True
    chunked = req.target == "/chunked"
    if chunked:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Big: 1\r\n\r\n")
    else:
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {len(BIG)}\r\nX-Big: 1\r\n\r\n".encode())
    await writer.drain()
    step = 50 * 1024
    for i in range(0, len(BIG), step):
        await asyncio.sleep(0.02)
        part = BIG[i:i + step]
        writer.write(b"%x\r\n%b\r\n" % (len(part), part) if chunked else part)
        await writer.drain()
    if chunked:
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    return True


@pytest.mark.parametrize("target", ["/length", "/chunked"])
@pytest.mark.parametrize("consume", ["read", "iterate"])
def test_large_body_sent_slowly(run: Any, target: str, consume: str) -> None:
    async def main() -> None:
        srv = await Server(scripted(send_big)).start()
        pool = srv.pool()
        assert await warm(pool, "/small") == b"small"
        rec = Recorder(pool)
        assert pool.start("GET", target, HOST, 2.0, rec, "big") is True
        info = await rec.wait(settle=0)
        resp = info["resp"]
        assert info["exc"] is None and info["retry"] is False
        assert resp.status == 200 and ("X-Big", "1") in resp.forward_headers()
        assert resp.chunked == (target == "/chunked")
        assert info["body_now"] is None       # the body was not in yet
        assert info["stats"]["in_use"] == 1   # and the connection still busy with it
        assert resp.body_now() is None and not resp.complete
        if consume == "read":
            data = await asyncio.wait_for(resp.read(), 5)
        else:
            parts = []

            async def collect() -> None:
                async for chunk in resp:
                    parts.append(chunk)

            await asyncio.wait_for(collect(), 5)
            assert len(parts) >= 2  # streamed as it came
            data = b"".join(parts)
        assert len(data) == len(BIG) and data == BIG
        assert resp.complete
        await resp.aclose()
        assert len(rec.calls) == 1
        assert pool.stats() == {"open": 1, "idle": 1, "in_use": 0, "connecting": 0, "waiting": 0}
        # reused afterwards, by start() and by request()
        rec2 = Recorder(pool)
        assert pool.start("GET", "/small", HOST, 2.0, rec2, None) is True
        assert (await rec2.wait())["body_now"] == b"small"
        r = await pool.request("GET", target, HOST, None, timeout=5)
        assert await r.read() == BIG
        assert srv.connections == 1 and conns_of(srv) == [1, 1, 1, 1]
        await pool.close()
        await srv.stop()

    run(main)


def test_body_read_timeout_after_the_head(run: Any) -> None:
    """``timeout`` also bounds each wait for body bytes once the response was delivered."""

    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        if req.target == "/warm":
            writer.write(response(200, b"w"))
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40)
        await writer.drain()
        await asyncio.sleep(10)
        return False

    async def main() -> None:
        srv, pool, rec = await started(script, "/stall", 0.2)
        info = await rec.wait(settle=0)
        resp = info["resp"]
        assert info["body_now"] is None
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(resp.read(), 3)
        assert 0.15 <= loop.time() - t0 < 1.0
        await asyncio.sleep(0.02)
        assert len(rec.calls) == 1
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


# -- 4. no head in time ---------------------------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"HTTP/1.1 200 OK\r\nContent-"], ids=["silent", "partial-head"])
def test_no_head_in_time(run: Any, sent: bytes) -> None:
    closed: list[bool] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        req = await read_request(reader)
        srv.requests.append(req)
        writer.write(response(200, b"w"))
        await writer.drain()
        req = await read_request(reader)
        srv.requests.append(req)
        writer.write(sent)
        await writer.drain()
        closed.append(await reader.read() == b"")  # blocks until the client closes

    async def main() -> None:
        srv = await Server(handler).start()
        pool = srv.pool()
        await warm(pool)  # a 5 s head timer was armed for it: start() must not wait for that one
        rec = Recorder(pool)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert pool.start("GET", "/hang", HOST, 0.2, rec, "t") is True
        info = await rec.wait()
        assert 0.15 <= info["t"] - t0 < 1.0
        assert info["resp"] is None and info["arg"] == "t"
        assert isinstance(info["exc"], UpstreamTimeout) and info["exc"].status == 504
        assert info["retry"] is False
        # the connection is closed, not pooled
        assert info["stats"]["open"] == 0
        await asyncio.sleep(0.05)
        assert pool.stats()["open"] == 0 and closed == [True]
        assert pool.start("GET", "/x", HOST, 0.2, Recorder(), None) is False
        assert [r.target for r in srv.requests] == ["/warm", "/hang"]
        await pool.close()
        await srv.stop()

    run(main)


def test_longer_timeout_is_not_cut_at_an_earlier_deadline(run: Any) -> None:
    """One head timer per connection: a start() with a longer timeout than the request
    before it on the same connection is not timed out at the earlier request's deadline."""

    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        if req.target == "/late":
            await asyncio.sleep(0.4)
        writer.write(response(200, b"ok"))
        await writer.drain()
        return True

    async def main() -> None:
        srv, pool, rec = await started(script, "/late", 2.0, warm_timeout=0.15)
        info = await rec.wait()
        assert info["exc"] is None and info["resp"].status == 200 and info["body_now"] == b"ok"
        assert srv.connections == 1
        await pool.close()
        await srv.stop()

    run(main)


# -- 5. the stale keep-alive race -------------------------------------------------------------


def stale(how: str) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter, Server], Awaitable[None]]:
    """Connection 1 answers its first request, then reads the second one's head and closes
    without sending a byte (FIN or RST; or RST after part of a status line: "partial").
    Later connections answer everything."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, srv: Server) -> None:
        n = srv.connections
        first = True
        while True:
            if n == 1 and not first:
                head = await read_head(reader)
                if head is None:
                    return
                req = Request(*head, b"")
                req.conn = n  # type: ignore[attr-defined]
                srv.requests.append(req)
                if how == "partial":  # some response bytes, then a reset
                    writer.write(b"HTTP/1.1 200")
                    await writer.drain()
                    await asyncio.sleep(0.02)
                if how != "fin":
                    rst_close(writer)
                return  # Server closes the writer: FIN
            req = await read_request(reader)
            if req is None:
                return
            req.conn = n  # type: ignore[attr-defined]
            srv.requests.append(req)
            if req.method == "HEAD":
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n")
            else:
                writer.write(response(200, f"c{n} {req.method}".encode()))
            await writer.drain()
            first = False

    return handler


@pytest.mark.parametrize("how", ["fin", "rst", "partial"])
@pytest.mark.parametrize("method,retry", [("GET", True), ("HEAD", True), ("DELETE", True), ("PUT", True),
                                          ("POST", False), ("PATCH", False)])
def test_stale_keepalive(run: Any, how: str, method: str, retry: bool) -> None:
    async def main() -> None:
        srv = await Server(stale(how)).start()
        pool = srv.pool()
        assert await warm(pool) == b"c1 GET"
        rec = Recorder(pool)
        assert pool.start(method, "/again", HOST, 2.0, rec, "s") is True
        info = await rec.wait()
        exc = info["exc"]
        assert info["resp"] is None and info["arg"] == "s"
        assert isinstance(exc, ResetError), exc
        assert exc.request_sent and exc.response_started == (how == "partial")
        # a request the server may have seen is sent again only when idempotent, and only
        # when no byte of a response came back
        assert info["retry"] is (retry and how != "partial")
        assert info["stats"]["open"] == 0
        assert [(r.method, r.target, r.conn) for r in srv.requests] == [("GET", "/warm", 1), (method, "/again", 1)]
        # the retry: a fresh connection
        resp = await asyncio.wait_for(pool.request(method, "/again", HOST, None, timeout=2, fresh=True), 3)
        assert resp.status == 200
        assert await resp.read() == (b"" if method == "HEAD" else f"c2 {method}".encode())
        assert srv.connections == 2 and srv.requests[-1].conn == 2
        assert pool.stats() == {"open": 1, "idle": 1, "in_use": 0, "connecting": 0, "waiting": 0}
        assert len(rec.calls) == 1
        await pool.close()
        await srv.stop()

    run(main)


def test_stale_close_right_after_the_response(run: Any) -> None:
    """The server closes its side right after a keep-alive response (the racy, real-life
    form of the above): start() either sees the connection gone (False, nothing sent), or
    sends on it and is told once, with a retryable ResetError."""

    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        writer.write(response(200, f"c{n}".encode()))
        await writer.drain()
        return False

    async def main() -> None:
        srv = await Server(scripted(script)).start()
        seen = set()
        for i in range(20):
            pool = srv.pool()
            await warm(pool)
            rec = Recorder(pool)
            if pool.start("GET", "/again", HOST, 2.0, rec, i):
                info = await rec.wait(settle=0.01)
                assert isinstance(info["exc"], ResetError) and info["retry"] is True
                assert info["resp"] is None and info["arg"] == i
                seen.add("called back")
            else:
                await never_called(rec, 0.01)
                seen.add("refused")
            resp = await pool.request("GET", "/retry", HOST, None, timeout=2, fresh=True)
            assert resp.status == 200 and await resp.read() == f"c{srv.connections}".encode()
            await pool.close()
        assert seen
        # each connection served one request (the server reads no second one)
        expected = []
        for i in range(20):
            expected += [("/warm", 2 * i + 1), ("/retry", 2 * i + 2)]
        assert [(r.target, r.conn) for r in srv.requests] == expected
        await srv.stop()

    run(main)


def test_fresh_request_opens_a_new_connection_and_does_not_retry(run: Any) -> None:
    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        if n == 3:
            return False  # the third connection closes at once, unanswered
        writer.write(response(200, f"c{n}".encode()))
        await writer.drain()
        return True

    async def main() -> None:
        srv = await Server(scripted(script)).start()
        pool = srv.pool()
        assert await warm(pool) == b"c1"
        # an idle connection exists, yet fresh=True connects anew
        resp = await pool.request("GET", "/f", HOST, None, timeout=2, fresh=True)
        assert await resp.read() == b"c2"
        assert srv.connections == 2
        assert pool.stats() == {"open": 2, "idle": 2, "in_use": 0, "connecting": 0, "waiting": 0}
        # a fresh connection that fails is not retried (on another new one, nor an idle one)
        with pytest.raises(ResetError):
            await asyncio.wait_for(pool.request("GET", "/g", HOST, None, timeout=2, fresh=True), 3)
        assert srv.connections == 3
        assert [(r.target, r.conn) for r in srv.requests] == [("/warm", 1), ("/f", 2), ("/g", 3)]
        assert pool.stats()["idle"] == 2
        await pool.close()
        await srv.stop()

    run(main)


# -- 6. a malformed response ------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"HTTP/1.1 abc\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"\x00\x01garbage\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
], ids=["bad-status", "dup-cl", "http2", "garbage", "upgrade"])
def test_malformed_response(run: Any, raw: bytes) -> None:
    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        writer.write(response(200, b"w") if req.target == "/warm" else raw)
        await writer.drain()
        return True

    async def main() -> None:
        srv, pool, rec = await started(script, "/bad", 2.0)
        info = await rec.wait()
        assert info["resp"] is None
        assert isinstance(info["exc"], ProtocolError), info["exc"]
        assert info["exc"].status == 502
        assert info["retry"] is False
        await asyncio.sleep(0.02)
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


# -- 7. interim responses ------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "separate-writes"])
def test_interim_1xx_skipped(run: Any, split: bool) -> None:
    interim = [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"]

    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        if req.target != "/warm":
            for part in interim:
                writer.write(part)
                if split:
                    await writer.drain()
                    await asyncio.sleep(0.03)
        writer.write(response(200, b"final", "X-Final: 1\r\n"))
        await writer.drain()
        return True

    async def main() -> None:
        srv = await Server(scripted(script)).start()
        pool = srv.pool()
        await warm(pool)
        for _ in range(2):
            rec = Recorder(pool)
            assert pool.start("GET", "/hints", HOST, 2.0, rec, None) is True
            info = await rec.wait()
            resp = info["resp"]
            assert info["exc"] is None and resp.status == 200
            assert resp.headers == [("Content-Length", "5"), ("X-Final", "1")]
            assert resp.forward_headers() == [("X-Final", "1")]
            assert info["body_now"] == b"final"
            assert info["stats"]["idle"] == 1
        assert srv.connections == 1
        await pool.close()
        await srv.stop()

    run(main)


# -- 8. HEAD ---------------------------------------------------------------------------------


def test_head_has_no_body_and_keeps_the_connection(run: Any) -> None:
    def make(req: Request) -> bytes:
        if req.method == "HEAD":
            return b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-H: 1\r\n\r\n"
        return response(200, b"0123456789")

    async def main() -> None:
        srv = await Server(scripted(answer(make))).start()
        pool = srv.pool()
        await warm(pool)
        for method in ("HEAD", "GET", "HEAD", "HEAD", "GET"):
            rec = Recorder(pool)
            assert pool.start(method, "/h", HOST, 2.0, rec, method) is True
            info = await rec.wait()
            resp = info["resp"]
            assert info["exc"] is None and resp.status == 200 and info["arg"] == method
            assert resp.content_length == 10
            if method == "HEAD":
                assert not resp.has_body()
                assert info["body_now"] == b""
                assert ("X-H", "1") in resp.forward_headers()
            else:
                assert resp.has_body() and info["body_now"] == b"0123456789"
            assert info["stats"] == {"open": 1, "idle": 1, "in_use": 0, "connecting": 0, "waiting": 0}
        resp = await pool.request("GET", "/h", HOST, None, timeout=2)
        assert await resp.read() == b"0123456789"
        assert srv.connections == 1 and conns_of(srv) == [1] * 7
        await pool.close()
        await srv.stop()

    run(main)


# -- 9. head, then the connection closes mid-body ------------------------------------------------


@pytest.mark.parametrize("how", ["together", "later", "rst"])
def test_close_mid_body_calls_back_once(run: Any, how: str) -> None:
    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        if req.target == "/warm":
            writer.write(response(200, b"w"))
            await writer.drain()
            return True
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 40)
        await writer.drain()
        if how != "together":
            await asyncio.sleep(0.1)
        if how == "rst":
            rst_close(writer)
        return False  # FIN

    async def main() -> None:
        srv, pool, rec = await started(script, "/trunc", 2.0)
        info = await rec.wait(settle=0)
        resp = info["resp"]
        assert info["exc"] is None and info["retry"] is False
        assert resp.status == 200 and resp.content_length == 100
        assert info["body_now"] is None
        with pytest.raises(ResetError) as ei:
            await asyncio.wait_for(resp.read(), 3)
        assert ei.value.kind == "body_truncated"
        await asyncio.sleep(0.1)
        assert len(rec.calls) == 1
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


def test_unsolicited_bytes_after_the_response(run: Any) -> None:
    """A complete response followed by a second one in the same read: the request gets its
    response (once); the out-of-sync connection is not reused."""

    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        body = response(200, b"a")
        writer.write(body if req.target == "/warm" else body + b"HTTP/1.1 200 OK\r\n")
        await writer.drain()
        return True

    async def main() -> None:
        srv, pool, rec = await started(script, "/two", 2.0)
        info = await rec.wait()
        assert info["exc"] is None and info["resp"].status == 200 and info["body_now"] == b"a"
        await asyncio.sleep(0.02)
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


# -- the callback chaining the next start() ----------------------------------------------------


def test_callback_may_start_the_next_request(run: Any) -> None:
    """The callback runs after the connection went back to the pool: it can start the next
    request on the very same connection from inside the callback."""

    async def main() -> None:
        srv = await Server(scripted(answer(lambda r: response(200, r.target.encode())))).start()
        pool = srv.pool(settings=PoolSettings(max_connections=1))
        await warm(pool)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        got: list[tuple[Any, Any, Any]] = []

        def cb(arg: int, resp: Any, exc: Any, retry: bool) -> None:
            got.append((arg, resp.body_now() if resp is not None else None, exc))
            if arg < 5:
                assert pool.start("GET", f"/{arg + 1}", HOST, 2.0, cb, arg + 1) is True
            elif not done.done():
                done.set_result(None)

        assert pool.start("GET", "/1", HOST, 2.0, cb, 1) is True
        await asyncio.wait_for(done, 3)
        await asyncio.sleep(0.02)
        assert got == [(i, f"/{i}".encode(), None) for i in range(1, 6)]
        assert srv.connections == 1
        await pool.close()
        await srv.stop()

    run(main)


# -- responses that end the connection ------------------------------------------------------


@pytest.mark.parametrize("kind", ["connection-close", "http10", "until-close", "split-head"])
def test_response_framing_variants(run: Any, kind: str) -> None:
    """A response whose head comes in pieces is delivered once, when whole; one that ends its
    connection (Connection: close, HTTP/1.0, or a body read until close) is delivered, and
    the connection is not pooled afterwards."""

    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        if req.target == "/warm":
            writer.write(response(200, b"w"))
            await writer.drain()
            return True
        if kind == "connection-close":
            writer.write(response(200, b"bye", "Connection: close\r\n"))
        elif kind == "http10":
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nbye")
        elif kind == "until-close":
            writer.write(b"HTTP/1.1 200 OK\r\nX-U: 1\r\n\r\nby")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"e")
            await writer.drain()
            return False
        else:
            raw = response(200, b"bye", "X-Split: 1\r\n")
            # the third piece completes the head (and brings b"b"); b"ye" comes last
            for part in (raw[:5], raw[5:20], raw[20:-2], raw[-2:]):
                writer.write(part)
                await writer.drain()
                await asyncio.sleep(0.03)
            return True
        await writer.drain()
        return True

    async def main() -> None:
        srv, pool, rec = await started(script, "/v", 2.0)
        info = await rec.wait()
        resp = info["resp"]
        assert info["exc"] is None and resp.status == 200
        if kind == "until-close":
            assert info["body_now"] is None
            assert await asyncio.wait_for(resp.read(), 3) == b"bye"
        elif kind == "split-head":
            assert ("X-Split", "1") in resp.forward_headers()
            # the body's last bytes came in a later read
            assert info["body_now"] is None and info["stats"]["in_use"] == 1
            assert await asyncio.wait_for(resp.read(), 3) == b"bye"
        else:
            assert not resp.keep_alive
            assert info["body_now"] == b"bye"
            assert info["stats"]["open"] == 0
        await asyncio.sleep(0.02)
        assert len(rec.calls) == 1
        if kind == "split-head":
            assert pool.stats()["idle"] == 1
        else:
            assert pool.stats()["open"] == 0
            assert pool.start("GET", "/x", HOST, 2.0, Recorder(), None) is False
        await pool.close()
        await srv.stop()

    run(main)


def test_malformed_body_after_the_head(run: Any) -> None:
    """A bad chunk in the read that also completed the head: the response is delivered
    (the head was fine), and reading its body raises ProtocolError."""

    async def script(req: Request, writer: asyncio.StreamWriter, srv: Server, n: int) -> bool:
        if req.target == "/warm":
            writer.write(response(200, b"w"))
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
        await writer.drain()
        return True

    async def main() -> None:
        srv, pool, rec = await started(script, "/bad-chunk", 2.0)
        info = await rec.wait()
        assert info["exc"] is None and info["resp"].status == 200 and info["body_now"] is None
        with pytest.raises(ProtocolError):
            await asyncio.wait_for(info["resp"].read(), 3)
        assert pool.stats()["open"] == 0
        await pool.close()
        await srv.stop()

    run(main)


# -- found while writing these tests, fixed since ----------------------------------------------


def test_invalid_request_in_start_does_not_leak_the_connection(run: Any) -> None:
    async def main() -> None:
        srv = await Server(scripted(answer(lambda r: response(200, b"ok")))).start()
        pool = srv.pool(settings=PoolSettings(max_connections=1))
        await warm(pool)
        rec = Recorder(pool)
        for method, target, headers in (("GET", "/a b", HOST), ("GET", "/", [("X", "1\r\nEvil: 1")]),
                                        ("GE T", "/", HOST)):
            try:
                ok = pool.start(method, target, headers, 1.0, rec, None)
            except ValueError:
                ok = None  # refused like request() refuses it: fine too
            assert ok in (None, False)
            assert pool.stats() == {"open": 1, "idle": 1, "in_use": 0, "connecting": 0, "waiting": 0}
        await never_called(rec)
        assert pool.start("GET", "/ok", HOST, 1.0, rec, None) is True
        assert (await rec.wait())["body_now"] == b"ok"
        assert [r.target for r in srv.requests] == ["/warm", "/ok"]
        await pool.close()
        await srv.stop()

    run(main)


def test_fresh_request_when_every_slot_is_idle(run: Any) -> None:
    async def main() -> None:
        srv = await Server(scripted(answer(lambda r: response(200, f"c{srv.connections}".encode())))).start()
        pool = srv.pool(settings=PoolSettings(max_connections=1))
        assert await warm(pool) == b"c1"
        resp = await asyncio.wait_for(pool.request("GET", "/f", HOST, None, timeout=0.5, fresh=True), 2)
        assert await resp.read() == b"c2"
        assert srv.connections == 2
        assert pool.stats()["open"] == 1
        await pool.close()
        await srv.stop()

    run(main)
