"""The native front end runs one task per client connection, in-process, on both twins.

Requests on a kept-alive connection are answered in turn by that connection's task (no new
task per request); the task ends when the connection closes, whatever the way: client
close, Connection: close, a malformed request, or a drain. No task may outlive its
connection (10,000 idle keep-alive connections must not leave 10,000 tasks behind once
they are gone).
"""
from __future__ import annotations

import asyncio
import socket

import pytest

import gwcore

TWINS = gwcore.twins("http1")


class App:
    """Answers every request with the number of the task that served it."""

    def __init__(self):
        self.seen: dict = {}     # task -> number (holds the tasks: no id() reuse)

    def serve_now(self, ex, peer):
        return self._serve(ex)     # always an awaitable: answered by the connection's task

    async def _serve(self, ex):
        if ex.path == "/sleep":
            await asyncio.sleep(0.01)
        task = asyncio.current_task()
        n = self.seen.setdefault(task, len(self.seen))
        ex.response_bytes(200, [("content-type", "text/plain")], str(n).encode())


async def _request(reader, writer, path: str = "/", extra: str = "") -> tuple[int, bytes]:
    writer.write(f"GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def _no_connection_tasks_left(before: set, timeout: float = 2.0) -> set:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}
        if not left or loop.time() > deadline:
            return left
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("name,mod", TWINS, ids=[n for n, _ in TWINS])
def test_one_task_per_connection_and_none_left_after_close(name, mod):
    async def main():
        loop = asyncio.get_running_loop()
        app = App()
        srv = mod.FrontendServer(app, loop)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        await srv.start(sock)
        port = sock.getsockname()[1]
        before = asyncio.all_tasks()
        try:
            conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
            per_conn = []
            for r, w in conns:
                ids = set()
                for path in ("/", "/sleep", "/"):
                    status, body = await _request(r, w, path)
                    assert status == 200
                    ids.add(body)
                per_conn.append(ids)
            # each connection: one task for all its requests; connections: distinct tasks
            assert all(len(ids) == 1 for ids in per_conn)
            assert len({next(iter(ids)) for ids in per_conn}) == 20
            # pipelined requests on one connection: answered in order by the same task
            r, w = conns[0]
            w.write(b"GET /sleep HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
            first = await _request(r, w, "/")   # a third one, sent after the two
            assert first[0] == 200
            # ways to end a connection: Connection: close, a malformed request, client close
            r1, w1 = conns[1]
            assert (await _request(r1, w1, "/", "Connection: close\r\n"))[0] == 200
            assert await r1.read() == b""
            r2, w2 = conns[2]
            w2.write(b"GARBAGE\r\n\r\n")
            await r2.read()
            for _, w in conns[3:]:
                w.close()
            # idle connections, still open: one waiting task each, no more
            live = {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}
            assert len(live) <= 20
            for _, w in conns[:1]:
                w.close()
            left = await _no_connection_tasks_left(before)
            assert not left, left
            # a drain closes idle connections and their tasks end too
            more = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
            for r, w in more:
                assert (await _request(r, w))[0] == 200
            await srv.drain(1.0)
            left = await _no_connection_tasks_left(before)
            assert not left, left
            for _, w in more:
                w.close()
        finally:
            if srv.server is not None:
                srv.server.close()
    asyncio.run(main())
