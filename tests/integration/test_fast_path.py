"""The gateway's fast path under the native front end, in-process, against a scripted upstream.

A plain proxied request without a body (behind stages that pass through: resource policy,
API key, a local throttle) is sent upstream in callback mode and answered from the upstream
connection's data_received, with no task for the client connection; everything else takes
the awaited path. Both must give the same answers: the tests check what a client and the
upstream see, including the stale keep-alive retry, timeouts, large and chunked bodies,
HEAD, and a client that goes away while its answer is pending.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import tempfile
from pathlib import Path

import orjson
import pytest

from tests.helpers import InProcessGateway

FIXTURES = str(Path(__file__).resolve().parent.parent / "functions" / "fixtures")
T = 5.0


class Upstream:
    """A loopback HTTP/1.1 server scripted by path; counts connections and requests."""

    def __init__(self):
        self.connections = 0
        self.requests: list[tuple[str, str]] = []
        self.drop_next = 0        # the next N requests: read, then close without a byte
        self.garbage = False      # answer /garbage with a malformed status line
        self.server = None
        self.port = 0

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter):
        self.connections += 1
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                line = head.split(b"\r\n", 1)[0].decode()
                method, target, _ = line.split(" ")
                self.requests.append((method, target))
                if self.drop_next:
                    self.drop_next -= 1
                    w.close()
                    return
                if target.startswith("/garbage") and self.garbage:
                    w.write(b"HTTP/1.1 abc\r\n\r\n")
                    continue
                if target.startswith("/stall"):
                    await asyncio.sleep(10)
                    return
                if target.startswith("/big"):
                    body = bytes(range(256)) * 1200          # 307,200 bytes, in pieces
                    w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
                    for i in range(0, len(body), 50_000):
                        w.write(body[i:i + 50_000])
                        await w.drain()
                        await asyncio.sleep(0.005)
                    continue
                if target.startswith("/chunked"):
                    w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for part in (b"alpha-", b"beta-", b"gamma"):
                        w.write(b"%x\r\n%b\r\n" % (len(part), part))
                        await asyncio.sleep(0.005)
                    w.write(b"0\r\n\r\n")
                    continue
                body = orjson.dumps({"method": method, "target": target})
                w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Up: 1\r\n"
                        b"Connection: keep-alive\r\nContent-Length: %d\r\n\r\n" % len(body)
                        + (b"" if method == "HEAD" else body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()

    def close(self):
        self.server.close()


CONFIG = """
server:
  access_log: {access_log}
throttle: {{rate: 100000, burst: 100000}}
apis:
  shop:
    type: rest
    stages:
      prod: {{}}
    routes:
      - route: ANY /p/{{proxy+}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/{{proxy}}", timeout: 0.5s}}
      - route: GET /keyed/{{id}}
        api_key_required: true
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/keyed/{{id}}"}}
      - route: GET /cached/{{id}}
        cache: {{enabled: true}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/cached/{{id}}"}}
      - route: GET /fn
        integration: {{type: aws_proxy, function: ok}}
      - route: ANY /link/{{proxy+}}
        integration: {{type: http_proxy, vpc_link: orders, uri: "http://orders/{{proxy}}", timeout: 0.5s}}
vpc_links:
  orders:
    targets: ["127.0.0.1:{port}", "127.0.0.1:{port2}"]
    outlier: {{consecutive_failures: 100}}
    private: false               # the plain routes name the same address
functions:
  ok: {{handler: basic.ok, code: "{fixtures}", runtime: inline, inline_sync: loop}}
api_keys:
  k1: {{sha256: {key_sha}}}
usage_plans:
  gold: {{stages: [shop/prod], keys: [k1], throttle: {{rate: 10000, burst: 10000}}}}
"""


class Gateway(InProcessGateway):
    def __init__(self, up_port: int, up_port2: int = 9, access_log: bool = False):
        self.dir = tempfile.mkdtemp(prefix="gwfast-")
        path = Path(self.dir, "gateway.yaml")
        path.write_text(CONFIG.format(port=up_port, port2=up_port2, fixtures=FIXTURES,
                                      access_log="true" if access_log else "false",
                                      key_sha=hashlib.sha256(b"secret-key-1").hexdigest()))
        super().__init__(path)

    def route(self, method: str, path: str):
        stage = self.app.gw.apis[0].stages["prod"]
        status, route, _ = stage.router.match(method, path)
        return route


async def read_response(r: asyncio.StreamReader, head_only: bool = False):
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), T)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for ln in lines[1:]:
        if ln:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
    if head_only:
        return status, headers, b""
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(r.readuntil(b"\r\n"), T)).strip(), 16)
            chunk = await asyncio.wait_for(r.readexactly(size + 2), T)
            if size == 0:
                break
            body += chunk[:-2]
        return status, headers, body
    n = int(headers.get("content-length", "0"))
    return status, headers, await asyncio.wait_for(r.readexactly(n), T)


async def warmed(gw) -> tuple:
    """A client connection, after one plain request (the pool then holds an idle upstream
    connection and knows its loop: the next plain requests can take the callback path)."""
    r, w = await asyncio.open_connection("127.0.0.1", gw.port)
    w.write(get("/prod/p/warm"))
    assert (await read_response(r))[0] == 200
    return r, w


async def expect_target(r, w, path: str, target: str) -> None:
    """GET ``path``: a 200 whose body says the upstream was asked for ``target``."""
    w.write(get(path))
    status, _, body = await read_response(r)
    assert status == 200 and orjson.loads(body)["target"] == target


def get(path: str, method: str = "GET", extra: str = "") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: gw\r\n{extra}\r\n".encode()


def run(test, two: bool = False, access_log: bool = False):
    async def main():
        up = Upstream()
        await up.start()
        up2 = None
        if two:
            up2 = Upstream()
            await up2.start()
        gw = Gateway(up.port, up2.port if two else 9, access_log)
        await gw.start()
        try:
            await asyncio.wait_for(test(up, gw) if not two else test(up, up2, gw), 30)
        finally:
            await gw.close()
            up.close()
            if up2 is not None:
                up2.close()
    # the inline function's module and code directory: other tests check that a config
    # check leaves neither behind, so this process-wide state is put back as it was
    path = list(sys.path)
    try:
        asyncio.run(main())
    finally:
        sys.path[:] = path
        sys.modules.pop("basic", None)


def client_tasks(before: set) -> set:
    return {t for t in asyncio.all_tasks() - before if t is not asyncio.current_task()}


def test_which_routes_get_the_callback_entry():
    up_port = 9   # never contacted: only the compiled routes are looked at
    gw = Gateway(up_port)
    assert gw.route("GET", "/p/a").start is not None            # behind the account throttle
    assert gw.route("GET", "/keyed/1").start is not None        # API key + throttle pass through
    assert gw.route("GET", "/cached/1").start is None           # the cache stage awaits a miss


def test_plain_requests_are_answered_without_a_task_and_match_the_awaited_path():
    async def t(up: Upstream, gw: Gateway):
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        w.write(get("/prod/p/warm"))                 # the pool learns its loop, keeps a connection
        assert (await read_response(r))[0] == 200    # (awaited: this connection got a task)
        w.close()
        before = set(asyncio.all_tasks())
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        for i in range(20):
            w.write(get(f"/prod/p/item/{i}?q={i}", extra="X-Trace: t\r\nConnection: keep-alive, X-Trace\r\n"))
            status, headers, body = await read_response(r)
            assert status == 200
            assert orjson.loads(body) == {"method": "GET", "target": f"/item/{i}?q={i}"}
            assert headers["x-up"] == "1" and "x-request-id" in headers
            assert "connection" not in headers                    # hop-by-hop: not passed on
            assert not client_tasks(before)                       # no task for this connection
        assert up.connections == 1                                # one kept-alive upstream connection
        # the same requests on the awaited path (a route with a cache stage) look the same
        w.write(get("/prod/cached/7"))
        status, headers, body = await read_response(r)
        assert status == 200 and orjson.loads(body) == {"method": "GET", "target": "/cached/7"}
        # an API key route: refused at once without the key, proxied with it
        w.write(get("/prod/keyed/3"))
        assert (await read_response(r))[0] == 403
        w.write(get("/prod/keyed/3", extra="x-api-key: secret-key-1\r\n"))
        status, _, body = await read_response(r)
        assert status == 200 and orjson.loads(body)["target"] == "/keyed/3"
        w.close()
    run(t)


def test_pipelined_plain_requests_come_back_in_order():
    async def t(up: Upstream, gw: Gateway):
        r, w = await warmed(gw)
        w.write(b"".join(get(f"/prod/p/n/{i}") for i in range(30)))
        for i in range(30):
            status, _, body = await read_response(r)
            assert status == 200 and orjson.loads(body)["target"] == f"/n/{i}"
        w.close()
    run(t)


def test_stale_upstream_connection_is_retried_for_get_not_for_post():
    async def t(up: Upstream, gw: Gateway):
        r, w = await warmed(gw)
        up.drop_next = 1                 # the kept-alive connection dies as it is reused
        await expect_target(r, w, "/prod/p/again", "/again")
        assert up.requests[-2:] == [("GET", "/again"), ("GET", "/again")]
        assert up.connections == 2
        up.drop_next = 1                 # a POST (no body) that may have run is not sent twice
        w.write(get("/prod/p/order", method="POST"))
        status, _, body = await read_response(r)
        assert status == 502 and orjson.loads(body) == {"message": "Bad Gateway"}
        assert up.requests[-1] == ("POST", "/order")
        assert up.requests.count(("POST", "/order")) == 1
        w.close()
    run(t)


def test_upstream_timeout_on_the_fast_path_is_504():
    async def t(up: Upstream, gw: Gateway):
        r, w = await warmed(gw)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        w.write(get("/prod/p/stall"))
        status, _, body = await read_response(r)
        assert status == 504 and orjson.loads(body) == {"message": "Endpoint request timed out"}
        assert 0.4 < loop.time() - t0 < 2.0              # the route's 0.5 s timeout
        await expect_target(r, w, "/prod/p/after", "/after")   # the client connection goes on
        w.close()
    run(t)


def test_large_chunked_and_head_responses_on_the_fast_path():
    async def t(up: Upstream, gw: Gateway):
        r, w = await warmed(gw)
        w.write(get("/prod/p/big"))
        status, headers, body = await read_response(r)
        assert status == 200 and body == bytes(range(256)) * 1200
        w.write(get("/prod/p/chunked"))
        status, headers, body = await read_response(r)
        assert status == 200 and body == b"alpha-beta-gamma"
        w.write(get("/prod/p/h", method="HEAD"))
        status, headers, _ = await read_response(r, head_only=True)
        expect = len(orjson.dumps({"method": "HEAD", "target": "/h"}))
        assert status == 200 and headers["content-length"] == str(expect)
        await expect_target(r, w, "/prod/p/after-head", "/after-head")   # nothing was left on the wire
        w.close()
    run(t)


def test_client_gone_while_the_upstream_answers():
    async def t(up: Upstream, gw: Gateway):
        r, w = await warmed(gw)
        w.write(get("/prod/p/stall"))
        await asyncio.sleep(0.05)
        w.transport.abort()
        await asyncio.sleep(0.7)                            # the upstream timeout fires meanwhile
        assert not gw.srv.connections
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        await expect_target(r, w, "/prod/p/next", "/next")
        w.close()
    run(t)


def test_inline_function_answers_are_written_at_once():
    """A sync handler on the loop answers inside serve_now: no task for the connection."""
    async def t(up: Upstream, gw: Gateway):
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        w.write(get("/prod/fn"))                     # loads the handler (awaited, a task)
        status, headers, body = await read_response(r)
        assert status == 200 and body == str(os.getpid()).encode()
        w.close()
        before = set(asyncio.all_tasks())
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        for _ in range(5):
            w.write(get("/prod/fn"))
            status, headers, body = await read_response(r)
            assert status == 200 and body == str(os.getpid()).encode()
            assert headers["x-amzn-requestid"] == headers["x-request-id"]
            assert not client_tasks(before)
        w.close()
    run(t)


def test_vpc_link_routes_take_the_fast_path_with_the_links_retries():
    async def t(up: Upstream, up2: Upstream, gw: Gateway):
        link = gw.app.gw.services.links.get("orders")
        assert gw.route("GET", "/link/a").start is not None
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        for i in range(4):                         # warm both targets (round robin)
            w.write(get(f"/prod/link/warm{i}"))
            assert (await read_response(r))[0] == 200
        assert up.connections == 1 and up2.connections == 1   # neither skipped
        w.close()
        before = set(asyncio.all_tasks())
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        for i in range(6):
            await expect_target(r, w, f"/prod/link/x/{i}", f"/x/{i}")
        assert not client_tasks(before)               # answered from the upstreams' callbacks
        assert [t.outstanding for t in link.targets] == [0, 0]
        # a stale kept-alive connection: the same target again on a new connection, and
        # not a failure of the target
        up.drop_next = up2.drop_next = 1
        for i in range(2):
            await expect_target(r, w, f"/prod/link/stale{i}", f"/stale{i}")
        assert [t.failures for t in link.targets] == [0, 0]
        # a malformed answer from one target: the link's retry sends it to the other one
        up2.garbage = True
        for i in range(2):
            await expect_target(r, w, f"/prod/link/garbage{i}", f"/garbage{i}")
        # (once or twice: a retry moves the round robin on, so the next pick may be it again)
        assert link.targets[0].failures == 0 and link.targets[1].failures in (1, 2)
        # not idempotent, and the request was sent: no retry, 502
        up.drop_next = up2.drop_next = 1
        w.write(get("/prod/link/order", method="POST"))
        status, _, body = await read_response(r)
        assert status == 502 and orjson.loads(body) == {"message": "Bad Gateway"}
        assert [t.outstanding for t in link.targets] == [0, 0]
        w.close()
    run(t, two=True)


def test_access_log_lines_on_the_fast_path():
    """With the access log on, answers still take the fast path and each gets its line."""
    async def t(up: Upstream, gw: Gateway):
        r, w = await warmed(gw)
        w.close()
        gw.app._log_buf.clear()
        before = set(asyncio.all_tasks())
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        ids = []
        for path in ("/prod/p/a?x=1", "/prod/nope", "/prod/keyed/1"):
            w.write(get(path))
            status, headers, _ = await read_response(r)
            ids.append((path, status, headers["x-request-id"]))
        assert not client_tasks(before)
        lines = list(gw.app._log_buf)
        assert len(lines) == 3, lines
        for line, (path, status, rid) in zip(lines, ids):
            assert line.startswith("127.0.0.1 - [")
            assert f'"GET {path} HTTP/1.1" {status} {rid} ' in line and line.endswith("ms\n")
        assert [s for _, s, _ in ids] == [200, 403, 403]
        w.close()
    run(t, access_log=True)
