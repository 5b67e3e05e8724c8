"""How the native front end hands requests to the app: ``app.serve_now(ex, peer)``.

``serve_now`` answers at once (returns None: the front end finishes the exchange there and
then, no task is made), or later from a callback (returns True: ``ex.complete()`` or
``ex.continue_with(aw)`` finish it), or returns an awaitable for the connection's single
task. Pipelined requests are started in a loop once a read was parsed and are answered in
order, whatever mix of the three kinds they are. Every test runs on both twins (compiled
and pure), in-process, over loopback sockets.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import struct
import sys

import pytest

import gwcore

TWINS = gwcore.twins("http1")
T = 3.0      # upper bound of every single wait


def twins(f):
    return pytest.mark.parametrize("name,mod", TWINS, ids=[n for n, _ in TWINS])(f)


# -- the app ------------------------------------------------------------------------------

class App:
    """Answers by the path's first segment:

    /sync/..     response_bytes at once, returns None
    /pending/..  returns True, a loop.call_later answers and calls complete()
    /await/..    returns a coroutine that sleeps then answers
    /cw/..       returns True, a loop.call_later hands a coroutine to continue_with()
    /raise       serve_now raises
    /none        returns None without answering
    The body of every answer is ``<path>``."""

    def __init__(self, delay: float = 0.01):
        self.delay = delay
        self.errors: list = []          # exceptions raised in our own callbacks
        self.exchanges: list = []
        self.depths: list = []          # Python stack depth at each serve_now call
        self.tasks_seen: list = []      # asyncio.all_tasks() at each serve_now call
        self.track_tasks = False
        self.before: set = set()
        self.double_complete = False
        self.hooks: dict = {}           # path -> callable(ex) instead of the answer

    def serve_now(self, ex, peer):
        self.exchanges.append(ex)
        depth, f = 0, sys._getframe()
        while f is not None:
            depth, f = depth + 1, f.f_back
        self.depths.append(depth)
        if self.track_tasks:
            self.tasks_seen.append(foreign(asyncio.all_tasks(), self.before))
        path = ex.path
        loop = asyncio.get_running_loop()
        if path in self.hooks:
            return self.hooks[path](ex)
        kind = path.split("/")[1]
        if kind == "sync":
            self.answer(ex)
            return None
        if kind == "pending":
            loop.call_later(self.delay, self._later, ex)
            return True
        if kind == "await":
            return self._coro(ex)
        if kind == "cw":
            loop.call_later(self.delay, self._continue, ex)
            return True
        if kind == "raise":
            raise ValueError("boom")
        if kind == "none":
            return None
        raise AssertionError(path)

    @staticmethod
    def answer(ex, status: int = 200):
        ex.response_bytes(status, [("content-type", "text/plain")], ex.path.encode())

    def _later(self, ex):
        try:
            self.answer(ex)
            ex.complete()
            if self.double_complete:
                ex.complete()           # ignored
        except Exception as e:          # pragma: no cover - what the tests look for
            self.errors.append(e)

    async def _coro(self, ex):
        await asyncio.sleep(self.delay)
        self.answer(ex)

    def _continue(self, ex):
        try:
            ex.continue_with(self._coro(ex))
        except Exception as e:          # pragma: no cover - what the tests look for
            self.errors.append(e)


# -- server and client helpers --------------------------------------------------------------

@contextlib.asynccontextmanager
async def serving(mod, app):
    loop = asyncio.get_running_loop()
    loop_errors: list = []
    loop.set_exception_handler(lambda _loop, ctx: loop_errors.append(ctx))
    srv = mod.FrontendServer(app, loop)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    await srv.start(sock)
    try:
        yield srv, sock.getsockname()[1], loop_errors
    finally:
        if srv.server is not None:
            srv.server.close()
        if srv._sweeper is not None:
            srv._sweeper.cancel()
        for c in list(srv.connections):
            c.transport.abort()


MINE: set = set()      # the test's own tasks (bounded waits), not the front end's


async def bounded(aw, timeout: float = T):
    """asyncio.wait_for over a task of our own, known as ours (see new_tasks)."""
    task = asyncio.ensure_future(aw)
    MINE.add(task)
    try:
        return await asyncio.wait_for(task, timeout)
    finally:
        MINE.discard(task)


async def connect(port):
    return await bounded(asyncio.open_connection("127.0.0.1", port))


def get(path: str, extra: str = "") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


async def read_response(reader) -> tuple[int, dict, bytes]:
    head = await bounded(reader.readuntil(b"\r\n\r\n"))
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
    body = await bounded(reader.readexactly(int(headers.get("content-length", 0))))
    return status, headers, body


async def read_eof(reader, timeout: float = T) -> bytes:
    """What is left before the server closes (b"" when it closes right after)."""
    return await bounded(reader.read(), timeout)


async def until(cond, timeout: float = T) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


def foreign(tasks: set, before: set) -> set:
    """Tasks in ``tasks`` that are neither the test's nor there before it started."""
    return {t for t in tasks - before - MINE if t is not asyncio.current_task()}


def new_tasks(before: set) -> set:
    return foreign(asyncio.all_tasks(), before)


def reset(writer) -> None:
    """Close with a RST (SO_LINGER 0), not a FIN."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


# -- 1. answers given at once make no task ------------------------------------------------

@twins
def test_sync_answers_create_no_task(name, mod):
    async def main():
        app = App()
        app.track_tasks = True
        async with serving(mod, app) as (srv, port, loop_errors):
            before = app.before = set(asyncio.all_tasks())
            conns = [await connect(port) for _ in range(20)]
            for i, (r, w) in enumerate(conns):
                for j in range(3):
                    path = f"/sync/{i}/{j}"
                    w.write(get(path))
                    status, _, body = await read_response(r)
                    assert (status, body) == (200, path.encode())
                    assert not new_tasks(before)
            # also pipelined on each connection
            for i, (r, w) in enumerate(conns):
                w.write(b"".join(get(f"/sync/p{i}/{j}") for j in range(3)))
            for i, (r, w) in enumerate(conns):
                for j in range(3):
                    status, _, body = await read_response(r)
                    assert (status, body) == (200, f"/sync/p{i}/{j}".encode())
            assert len(app.exchanges) == 20 * 6
            # at no point did a task besides ours exist, seen from inside serve_now too
            assert len(app.tasks_seen) == 20 * 6
            assert not any(app.tasks_seen), app.tasks_seen
            assert not new_tasks(before)
            assert len(srv.connections) == 20
            assert all(c.task is None for c in srv.connections)
            for _, w in conns:
                w.close()
            assert await until(lambda: not srv.connections)
            assert not loop_errors, loop_errors
    asyncio.run(main())


# -- 2. hundreds of pipelined requests in one write -----------------------------------------

@twins
def test_500_pipelined_sync_requests_in_one_write(name, mod, caplog):
    async def main():
        app = App()
        async with serving(mod, app) as (srv, port, loop_errors):
            r, w = await connect(port)
            w.write(b"".join(get(f"/sync/{i}") for i in range(500)))
            for i in range(500):
                status, _, body = await read_response(r)
                assert (status, body) == (200, f"/sync/{i}".encode()), i
            # started in a loop: the stack does not grow with the number of requests
            assert len(app.depths) == 500
            assert max(app.depths) - min(app.depths) < 20, (min(app.depths), max(app.depths))
            # the connection is still usable, for sync and awaited answers alike
            w.write(get("/sync/after"))
            status, _, body = await read_response(r)
            assert (status, body) == (200, b"/sync/after")
            w.write(get("/await/after"))
            status, _, body = await read_response(r)
            assert (status, body) == (200, b"/await/after")
            assert len(srv.connections) == 1
            w.close()
            assert not loop_errors, loop_errors
    with caplog.at_level(logging.ERROR, logger="gwproxy.frontend"):
        asyncio.run(main())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "RecursionError" not in caplog.text


# -- 3. answers from a callback --------------------------------------------------------------

@twins
def test_pending_answers_in_order_and_second_complete_is_ignored(name, mod):
    async def main():
        app = App()
        app.double_complete = True
        stale = []

        def late_stale(ex):
            # before answering this one, finish the first exchange once more: ignored, it
            # must not finish (or 500) the exchange that is current now
            loop = asyncio.get_running_loop()

            def cb():
                try:
                    stale[0].complete()
                    stale[0].response_bytes(201, [], b"stale")   # started already: ignored
                except Exception as e:      # pragma: no cover
                    app.errors.append(e)
                loop.call_later(0.02, app._later, ex)
            loop.call_later(0.01, cb)
            return True

        app.hooks["/pending/late"] = late_stale
        async with serving(mod, app) as (srv, port, loop_errors):
            before = set(asyncio.all_tasks())
            r, w = await connect(port)
            w.write(get("/pending/a") + get("/pending/b") + get("/pending/c"))
            for p in (b"/pending/a", b"/pending/b", b"/pending/c"):
                status, headers, body = await read_response(r)
                assert (status, body) == (200, p)
                assert headers.get("connection") != "close"
            stale.append(app.exchanges[0])
            w.write(get("/pending/late") + get("/sync/next"))
            status, _, body = await read_response(r)
            assert (status, body) == (200, b"/pending/late")
            status, _, body = await read_response(r)
            assert (status, body) == (200, b"/sync/next")
            # still open and nothing else was written
            w.write(get("/sync/last"))
            assert (await read_response(r))[2] == b"/sync/last"
            assert not app.errors, app.errors
            # answered from callbacks: no task either
            assert not new_tasks(before)
            w.close()
            assert await until(lambda: not srv.connections)
            assert not loop_errors, loop_errors
    asyncio.run(main())


# -- 4. continue_with, and the three kinds mixed --------------------------------------------

@twins
def test_continue_with_and_mixed_kinds_keep_order(name, mod):
    async def main():
        app = App()
        async with serving(mod, app) as (srv, port, loop_errors):
            before = set(asyncio.all_tasks())
            r, w = await connect(port)
            # several on one connection, one after another, then pipelined
            for i in range(3):
                w.write(get(f"/cw/{i}"))
                status, _, body = await read_response(r)
                assert (status, body) == (200, f"/cw/{i}".encode())
            w.write(b"".join(get(f"/cw/p{i}") for i in range(4)))
            for i in range(4):
                status, _, body = await read_response(r)
                assert (status, body) == (200, f"/cw/p{i}".encode())
            # at most one task for the connection
            assert len(new_tasks(before)) <= 1
            # every kind, pipelined in one write, twice over, in every order of neighbours
            kinds = ["sync", "pending", "await", "cw", "sync", "await", "await", "pending",
                     "pending", "cw", "cw", "sync", "sync", "await", "cw", "pending", "sync"]
            paths = [f"/{k}/m{i}" for i, k in enumerate(kinds)]
            w.write(b"".join(get(p) for p in paths))
            for p in paths:
                status, headers, body = await read_response(r)
                assert (status, body) == (200, p.encode())
                assert headers.get("connection") != "close"
            # the connection goes on afterwards
            w.write(get("/sync/end"))
            assert (await read_response(r))[2] == b"/sync/end"
            assert len(new_tasks(before)) <= 1
            assert not app.errors, app.errors
            w.close()
            assert await until(lambda: not srv.connections)
            assert await until(lambda: not new_tasks(before))
            assert not loop_errors, loop_errors
    asyncio.run(main())


@twins
def test_continue_with_on_a_fresh_connection_then_sync(name, mod):
    """continue_with is the first thing that needs the task: it is made then, and later
    requests, answered at once, are started by it (handed off) in order."""
    async def main():
        app = App()
        async with serving(mod, app) as (srv, port, loop_errors):
            r, w = await connect(port)
            w.write(get("/cw/0") + b"".join(get(f"/sync/{i}") for i in range(50))
                    + get("/pending/x") + get("/await/y"))
            assert (await read_response(r))[2] == b"/cw/0"
            for i in range(50):
                assert (await read_response(r))[2] == f"/sync/{i}".encode()
            assert (await read_response(r))[2] == b"/pending/x"
            assert (await read_response(r))[2] == b"/await/y"
            assert not app.errors, app.errors
            w.close()
            assert await until(lambda: not srv.connections)
            assert not loop_errors, loop_errors
    asyncio.run(main())


# -- 5. errors -------------------------------------------------------------------------------

@twins
def test_serve_now_raising_or_not_answering_is_a_500(name, mod, caplog):
    async def main():
        app = App()
        async with serving(mod, app) as (srv, port, loop_errors):
            before = set(asyncio.all_tasks())
            for path in ("/raise", "/none"):
                r, w = await connect(port)
                w.write(get("/sync/first"))
                assert (await read_response(r))[::2] == (200, b"/sync/first")
                w.write(get(path))
                status, headers, body = await read_response(r)
                assert status == 500
                assert headers["content-type"] == "application/json"
                assert json.loads(body) == {"message": "Internal server error"}
                # _answer_plain drops keep-alive: the 500 says so and the connection closes
                assert headers.get("connection") == "close"
                assert await read_eof(r) == b""
                w.close()
                # the server goes on: a new connection is served, and kept alive
                r, w = await connect(port)
                w.write(get("/sync/again"))
                assert (await read_response(r))[::2] == (200, b"/sync/again")
                w.write(get("/await/again"))
                assert (await read_response(r))[::2] == (200, b"/await/again")
                w.close()
            assert await until(lambda: not srv.connections)
            assert not new_tasks(before)
            assert not loop_errors, loop_errors
    with caplog.at_level(logging.ERROR, logger="gwproxy.frontend"):
        asyncio.run(main())
    assert "boom" in caplog.text      # the raise is logged


@pytest.mark.parametrize("first", [
    "500-raise",
    "500-none",
    "draining",
    "connection-close",      # llhttp refuses data after it: nothing is queued
    "http/1.0",
])
@twins
def test_requests_pipelined_behind_a_closing_answer_are_not_served(name, mod, first):
    """Once an answer closes the connection, what was pipelined behind it in the same write
    is dropped without reaching the app (a POST there must not be forwarded upstream for
    nobody to read its answer)."""
    heads = {
        "500-raise": get("/raise"),
        "500-none": get("/none"),
        "draining": get("/sync/closing"),
        "connection-close": get("/sync/closing", "Connection: close\r\n"),
        "http/1.0": b"GET /sync/closing HTTP/1.0\r\n\r\n",
    }

    async def main():
        app = App()
        async with serving(mod, app) as (srv, port, loop_errors):
            r, w = await connect(port)
            if first == "draining":
                srv.draining = True      # as drain() does, with this connection busy
            w.write(heads[first] + get("/sync/behind") + get("/sync/behind2"))
            status, headers, _ = await read_response(r)
            assert headers.get("connection") == "close"
            assert await read_eof(r) == b""
            w.close()
            assert await until(lambda: not srv.connections)
            served = [ex.path for ex in app.exchanges]
            assert len(served) == 1, served
    asyncio.run(main())


# -- 6. answered before the body was read -----------------------------------------------------

@twins
def test_post_answered_before_its_body_arrives(name, mod):
    async def main():
        app = App()
        async with serving(mod, app) as (srv, port, loop_errors):
            loop = asyncio.get_running_loop()
            r, w = await connect(port)
            w.write(b"POST /sync/post HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n")
            status, headers, body = await read_response(r)
            assert (status, body) == (200, b"/sync/post")
            # the body was not read: the answer says close ...
            assert headers.get("connection") == "close"
            await asyncio.sleep(0.05)
            w.write(b"hello")
            # ... the server half-closes at once (lingering to drain the body), so the
            # client sees the end of the stream, not a reset and not a hang
            t0 = loop.time()
            assert await read_eof(r) == b""
            assert loop.time() - t0 < 1.0
            # anything sent now is discarded, not parsed as a request
            w.write(get("/sync/ignored"))
            await asyncio.sleep(0.05)
            assert [ex.path for ex in app.exchanges] == ["/sync/post"]
            assert len(srv.connections) == 1          # lingering until the client closes
            w.close()
            assert await until(lambda: not srv.connections, 1.5)   # before LINGER_S
            assert not loop_errors, loop_errors
    asyncio.run(main())


# -- 7. a malformed request after a good one ----------------------------------------------------

@twins
def test_malformed_request_after_a_good_one_in_the_same_write(name, mod):
    async def main():
        app = App()
        async with serving(mod, app) as (srv, port, loop_errors):
            for first in ("/sync/ok", "/pending/ok", "/await/ok"):
                r, w = await connect(port)
                w.write(get(first) + b"GARBAGE\r\n\r\n")
                status, _, body = await read_response(r)
                assert (status, body) == (200, first.encode())
                status, headers, body = await read_response(r)
                assert status == 400
                assert json.loads(body) == {"message": "Bad Request"}
                assert headers.get("connection") == "close"
                assert await read_eof(r) == b""
                w.close()
            assert await until(lambda: not srv.connections)
            assert [ex.path for ex in app.exchanges] == ["/sync/ok", "/pending/ok", "/await/ok"]
            assert not loop_errors, loop_errors
    asyncio.run(main())


# -- 8. the client goes away while an answer is pending ------------------------------------------

@pytest.mark.parametrize("kind", ["pending", "await"])
@pytest.mark.parametrize("how", ["reset", "close"])
@twins
def test_client_gone_while_an_answer_is_outstanding(name, mod, how, kind):
    async def main():
        app = App(delay=0.1)
        app.double_complete = True
        async with serving(mod, app) as (srv, port, loop_errors):
            before = set(asyncio.all_tasks())
            r, w = await connect(port)
            w.write(get(f"/{kind}/x"))
            assert await until(lambda: len(app.exchanges) == 1)
            if how == "reset":
                reset(w)                   # RST: the server sees connection_lost at once
            else:
                w.close()                  # FIN: the server sees eof_received first
            await asyncio.sleep(0.2)       # the answer comes after the client left
            assert app.exchanges[0].started
            assert not app.errors, app.errors      # response_bytes + complete() x2: fine
            assert await until(lambda: not srv.connections, 1.0), \
                [(c.current, c.closed, c.queue) for c in srv.connections]
            assert await until(lambda: not new_tasks(before), 1.0)
            assert not loop_errors, loop_errors
    asyncio.run(main())


@pytest.mark.parametrize("kind", [
    "sync",      # answered before the EOF: eof_received() lets the transport close
    "pending",
    "await",
])
@twins
def test_half_closed_client_gets_its_answer_then_the_close(name, mod, kind):
    """A client that shut down its sending side still gets its answer; then the server
    closes (no further request can come)."""
    async def main():
        app = App(delay=0.05)
        async with serving(mod, app) as (srv, port, loop_errors):
            r, w = await connect(port)
            w.write(get(f"/{kind}/x"))
            if kind == "sync":
                assert (await read_response(r))[::2] == (200, b"/sync/x")
            w.write_eof()
            if kind != "sync":
                status, _, body = await read_response(r)
                assert (status, body) == (200, f"/{kind}/x".encode())
            assert await read_eof(r, 1.0) == b""
            w.close()
            assert await until(lambda: not srv.connections, 1.0)
            assert not loop_errors, loop_errors
    asyncio.run(main())


# -- 9. drain waits for a pending answer ---------------------------------------------------------

@twins
def test_drain_waits_for_a_pending_answer(name, mod):
    async def main():
        app = App(delay=0.3)
        async with serving(mod, app) as (srv, port, loop_errors):
            loop = asyncio.get_running_loop()
            r, w = await connect(port)
            idle_r, idle_w = await connect(port)
            idle_w.write(get("/sync/idle"))
            assert (await read_response(idle_r))[0] == 200
            w.write(get("/pending/slow"))
            assert await until(lambda: len(app.exchanges) == 2)
            t0 = loop.time()
            drain = asyncio.ensure_future(srv.drain(1.0))
            # the idle connection is closed at once
            assert await read_eof(idle_r) == b""
            assert not drain.done()
            # the pending one is answered in full, told to close, then closed
            status, headers, body = await read_response(r)
            assert (status, body) == (200, b"/pending/slow")
            assert headers.get("connection") == "close"
            assert await read_eof(r) == b""
            await asyncio.wait_for(drain, T)
            took = loop.time() - t0
            assert 0.2 <= took < 0.9, took     # waited for the answer, did not time out
            assert not srv.connections
            assert not app.errors, app.errors
            w.close()
            idle_w.close()
            assert not loop_errors, loop_errors
    asyncio.run(main())
