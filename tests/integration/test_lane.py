"""Forwarding lanes (gwcore.lane) under the real native front end, in-process.

The first request to a plain ``http_proxy`` route goes through the app (``serve_now``)
and registers a lane for its (Host, method, raw path); the next such scanned requests are
forwarded by the lane. The tests check, against a scripted loopback upstream that records
the raw request heads it gets, that a lane is taken when it should be, never registered
for routes that need the app's per-request Python, and that a lane's answers (and the
ones it hands back to the app: chunked, large, bodiless, HEAD, stale or no idle upstream
connection, timeouts, upstream errors, throttle refusals) are byte for byte those of the
app's path, apart from the request id and the Date header.

The compiled twins run in this process; ``test_pure_twin_in_a_subprocess`` runs the main
tests again under ``GWCORE_PURE=1`` (the twin is chosen at import).
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import gwcore
import proxy.app
from tests.helpers import InProcessGateway

http1 = gwcore.load("http1")
ROOT = Path(__file__).resolve().parent.parent.parent
T = 5.0
HOST = "gw"
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
CHILD = "GWPROXY_LANE_TEST_CHILD"
_lane_key = gwcore.load("h1scan").lane_key


def K(host: str, method: str, path: str) -> bytes:
    """The app's lane table key for a Host, method and raw path."""
    return _lane_key(method, path, host)


# -- the scripted upstream ---------------------------------------------------------------

class Upstream:
    """A loopback HTTP/1.1 server that records every raw request head and answers by the
    first segment of the target's path (see ``_answer``)."""

    def __init__(self):
        self.heads: list[bytes] = []
        self.connections = 0
        self.drop_next = 0           # the next N requests: read, then close without a byte
        self.idle: set = set()       # writers of connections waiting for a request
        self.server = None
        self.port = 0

    async def start(self):
        self.server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    def close(self):
        self.server.close()

    def mark(self) -> int:
        return len(self.heads)

    def since(self, mark: int, needle: str | None = None) -> list[bytes]:
        """The heads received after ``mark`` (only those whose request line has ``needle``)."""
        heads = self.heads[mark:]
        if needle is not None:
            heads = [h for h in heads if needle.encode() in h.split(b"\r\n", 1)[0]]
        return heads

    async def close_idle(self):
        """Close the connections that wait for a request (the gateway's idle ones)."""
        for w in list(self.idle):
            w.close()
        self.idle.clear()
        await asyncio.sleep(0.05)

    async def _conn(self, r: asyncio.StreamReader, w: asyncio.StreamWriter):
        self.connections += 1
        try:
            while True:
                self.idle.add(w)
                head = await r.readuntil(b"\r\n\r\n")
                self.idle.discard(w)
                self.heads.append(head)
                method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                if self.drop_next:
                    self.drop_next -= 1
                    return
                if not await self._answer(w, method, target):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass                 # (cancelled: the test's loop is shutting down)
        finally:
            self.idle.discard(w)
            w.close()

    async def _answer(self, w, method: str, target: str) -> bool:
        """Write the scripted answer; False: close the connection."""
        what = target.split("?", 1)[0].split("/")[1]
        head_only = method == "HEAD"
        if what == "stall":
            await asyncio.sleep(3)
            return False
        if what == "drop":                       # reads the request, closes without a byte
            return False
        if what == "slow":                       # the usual answer, 0.2 s late
            await asyncio.sleep(0.2)
        if what == "chunked":
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Up: 1\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
            for part in (b"alpha-", b"beta-", b"gamma"):
                w.write(b"%x\r\n%b\r\n" % (len(part), part))
                await w.drain()
                await asyncio.sleep(0.002)
            w.write(b"0\r\n\r\n")
            return True
        if what == "big":                         # more than the 256 KiB a lane writes whole
            body = bytes(range(256)) * 1200       # 307,200 bytes
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body))
            for i in range(0, len(body), 64 * 1024):
                w.write(body[i:i + 64 * 1024])
                await w.drain()
                await asyncio.sleep(0.002)
            return True
        if what == "mid":                         # under 256 KiB, written at once
            body = bytes(range(256)) * 600        # 153,600 bytes
            w.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
            return True
        if what == "nocontent":
            w.write(b"HTTP/1.1 204 No Content\r\nX-Up: 1\r\n\r\n")
            return True
        if what == "notmodified":
            w.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nX-Up: 1\r\n\r\n')
            return True
        body = orjson.dumps({"method": method, "target": target})
        closing = what == "closing"
        w.write(b"HTTP/1.1 200 OK\r\nServer: up\r\nContent-Type: application/json\r\nX-Up: 1\r\n"
                b"Keep-Alive: timeout=30\r\nConnection: %s\r\nContent-Length: %d\r\n\r\n"
                % (b"close" if closing else b"keep-alive", len(body))
                + (b"" if head_only else body))
        await w.drain()
        return not closing


# -- the gateway -------------------------------------------------------------------------

CONFIG = """
server:
  access_log: {access_log}
throttle: {{rate: 100000, burst: 100000}}
apis:
  shop:
    type: rest
    stages:
      b: {{}}
      c:
        cache: {{enabled: true, ttl: 60, capacity_mb: 4}}
      t:
        throttle: {{rate: 0.001, burst: 3}}
    routes:
      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/pets/{{id}}"}}
      - route: GET /fixed/{{id}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/pets/{{id}}?fixed=1"}}
      - route: ANY /p/{{proxy+}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/{{proxy}}"}}
      - route: GET /slow/{{id}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/stall/{{id}}", timeout: 0.3s}}
      - route: GET /limited/{{id}}
        throttle: {{rate: 0.001, burst: 3}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/limited/{{id}}"}}
      - route: GET /keyed/{{id}}
        api_key_required: true
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/keyed/{{id}}"}}
      - route: GET /cached/{{id}}
        cache: {{enabled: true}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/cached/{{id}}"}}
      - route: GET /mock
        integration: {{type: mock, status: 200, body: '{{"ok":true}}'}}
      - route: GET /link/{{proxy+}}
        integration: {{type: http_proxy, vpc_link: orders, uri: "http://orders/{{proxy}}"}}
      - route: GET /perclient/{{id}}
        throttle: {{rate: 100000, burst: 100000, per_client: {{rate: 1000, burst: 1000}}}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/perclient/{{id}}"}}
      - route: GET /policed/{{id}}
        policy: {{allow: ["127.0.0.0/8"]}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{port}/policed/{{id}}"}}
vpc_links:
  orders:
    targets: ["127.0.0.1:{port}"]
    private: false               # the plain routes name the same address
api_keys:
  k1: {{sha256: {key_sha}}}
usage_plans:
  gold: {{stages: [shop/b], keys: [k1], throttle: {{rate: 10000, burst: 10000}}}}
"""


class Gateway(InProcessGateway):
    """The real app on a real config, behind the native front end on a loopback socket."""

    def __init__(self, tmp: Path, up_port: int, access_log: bool = False):
        tmp.mkdir(parents=True, exist_ok=True)
        path = tmp / "gateway.yaml"
        path.write_text(CONFIG.format(port=up_port, access_log="true" if access_log else "false",
                                      key_sha=hashlib.sha256(b"secret-key-1").hexdigest()))
        super().__init__(path)
        self.up_port = up_port
        self.serve_now_calls: list[tuple[str, str]] = []
        orig = self.app.serve_now

        def serve_now(ex, peer):         # counts the requests that reach the app's entry
            self.serve_now_calls.append((ex.method, ex.path))
            return orig(ex, peer)
        self.app.serve_now = serve_now

    @property
    def pool(self):
        return self.app.gw.services.upstreams.pool("127.0.0.1", self.up_port)


def run(tmp_path, test, access_log: bool = False):
    async def main():
        up = Upstream()
        await up.start()
        gw = Gateway(tmp_path / "gw", up.port, access_log)
        await gw.start()
        try:
            await asyncio.wait_for(test(up, gw), 20)
        finally:
            await gw.close()
            up.close()
    asyncio.run(main())


# -- the client --------------------------------------------------------------------------

def request(path: str, method: str = "GET", extra: str = "", host: str = HOST) -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


async def read_raw(r: asyncio.StreamReader, head_only: bool = False) -> bytes:
    """One whole response as it came on the wire (head, framing and body)."""
    head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), T)
    headers = {}
    for ln in head.decode("latin-1").split("\r\n")[1:]:
        if ln:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
    status = int(head.split(b" ", 2)[1])
    if head_only or status in (204, 304):
        return head
    if headers.get("transfer-encoding") == "chunked":
        raw = b""
        while True:
            line = await asyncio.wait_for(r.readuntil(b"\r\n"), T)
            size = int(line.strip(), 16)
            raw += line + await asyncio.wait_for(r.readexactly(size + 2), T)
            if size == 0:
                return head + raw
    return head + await asyncio.wait_for(r.readexactly(int(headers.get("content-length", "0"))), T)


class Answer:
    """A response as the client got it, and its parts."""

    def __init__(self, raw: bytes):
        self.raw = raw
        head, _, self.wire_body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = [(k.strip().lower(), v.strip()) for k, _, v in
                        (ln.partition(":") for ln in lines[1:])]
        rids = [v for k, v in self.headers if k == "x-request-id"]
        assert len(rids) == 1, raw[:400]
        self.rid = rids[0]
        assert UUID4.match(self.rid), self.rid
        # the same bytes apart from the request id's value and the Date
        self.norm = re.sub(rb"(?im)^(x-request-id|date):[^\r]*", rb"\1: *", raw)

    def header(self, name: str):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    @property
    def body(self) -> bytes:
        if self.header("transfer-encoding") != "chunked":
            return self.wire_body
        out, rest = b"", self.wire_body
        while True:
            line, _, rest = rest.partition(b"\r\n")
            n = int(line, 16)
            if n == 0:
                return out
            out, rest = out + rest[:n], rest[n + 2:]


async def call(gw: Gateway, raw: bytes, head_only: bool = False) -> Answer:
    """``raw`` on a new client connection; its answer."""
    r, w = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        w.write(raw)
        return Answer(await read_raw(r, head_only))
    finally:
        w.close()


async def warm(gw: Gateway) -> None:
    """A plain request that leaves an idle keep-alive upstream connection in the pool."""
    a = await call(gw, request("/b/p/warm"))
    assert a.status == 200
    await asyncio.sleep(0.01)


async def both_ways(up: Upstream, gw: Gateway, raw: bytes, key: tuple, *, head_only=False,
                    lane_taken=True, before=None):
    """``raw`` three times: on the app's path (it registers the lane for ``key``), through
    the lane, and on the app's path again with the lane table emptied. Each time after a
    warm-up (an idle upstream connection at hand) and ``before()`` when given. Returns
    ([app, lane, app again] answers, the upstream heads each one caused)."""
    answers, heads = [], []
    for i in range(3):
        if i != 1:
            gw.app.lanes.clear()
        await warm(gw)
        if i == 1:
            assert key in gw.app.lanes, (key, list(gw.app.lanes))
        if before is not None:
            await before()
        mark, calls = up.mark(), len(gw.serve_now_calls)
        answers.append(await call(gw, raw, head_only))
        await asyncio.sleep(0.01)
        heads.append(up.since(mark))
        if i == 1 and lane_taken:        # the lane answered (or handed back) by itself
            assert len(gw.serve_now_calls) == calls, gw.serve_now_calls[calls:]
        else:                            # the app's entry (the lane, if any, declined)
            assert len(gw.serve_now_calls) == calls + 1, gw.serve_now_calls[calls:]
        assert key in gw.app.lanes
    return answers, heads


def assert_same(answers, heads):
    app, lane, app2 = answers
    assert lane.norm == app.norm == app2.norm, (lane.raw[:600], app.raw[:600])
    assert len({a.rid for a in answers}) == 3          # a new request id each time
    assert heads[1] == heads[0] == heads[2], heads
    assert heads[1]                                      # the upstream was asked


# -- the tests ---------------------------------------------------------------------------

def test_twin_in_use():
    """The twins this process runs (compiled unless GWCORE_PURE=1 forces the pure ones)."""
    want = "python" if gwcore.PURE else "cython"
    if not gwcore.PURE and not http1.__file__.endswith(".so"):
        pytest.skip("the compiled front end is not built")
    assert gwcore.IMPLEMENTATIONS["lane"] == want
    assert gwcore.IMPLEMENTATIONS["http1"] == want
    assert proxy.app._lane_mod.__file__.endswith(".py" if gwcore.PURE else ".so")


def test_second_request_is_taken_by_the_lane(tmp_path):
    async def t(up: Upstream, gw: Gateway):
        key = K(HOST, "GET", "/b/pets/1")
        assert gw.app.lanes == {}
        first = await call(gw, request("/b/pets/1"))
        assert first.status == 200
        assert list(gw.app.lanes) == [key]
        assert gw.serve_now_calls == [("GET", "/b/pets/1")]
        await asyncio.sleep(0.01)
        for _ in range(3):
            a = await call(gw, request("/b/pets/1"))
            assert a.status == 200
            assert orjson.loads(a.body) == {"method": "GET", "target": "/pets/1"}
            assert a.header("x-up") == "1" and a.header("server") == "up"
            assert a.header("connection") is None and a.header("keep-alive") is None
        assert gw.serve_now_calls == [("GET", "/b/pets/1")]     # never the app's entry again
        assert up.connections == 1                               # the kept-alive connection
        assert len(up.heads) == 4
        # one keep-alive client connection, a request at a time: each by the lane
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        for i in range(5):
            w.write(request("/b/pets/1", extra=f"X-N: {i}\r\n"))
            a = Answer(await read_raw(r))
            assert a.status == 200 and orjson.loads(a.body)["target"] == "/pets/1"
        assert gw.serve_now_calls == [("GET", "/b/pets/1")]
        # pipelined (not one head per read: llhttp parses them, the app's entry takes them)
        w.write(b"".join(request("/b/pets/1", extra=f"X-N: {i}\r\n") for i in range(5, 10)))
        for i in range(5, 10):
            a = Answer(await read_raw(r))
            assert a.status == 200 and orjson.loads(a.body)["target"] == "/pets/1"
        w.close()
        assert [h.split(b"x-n: ")[1].split(b"\r\n")[0] for h in up.heads[4:]] == \
            [str(i).encode() for i in range(10)]
        assert up.connections == 1
        # another Host, another method: not this lane
        calls = len(gw.serve_now_calls)
        a = await call(gw, request("/b/pets/1", host="other"))
        assert a.status == 200 and K("other", "GET", "/b/pets/1") in gw.app.lanes
        a = await call(gw, request("/b/p/1", method="POST", extra="Content-Length: 0\r\n"))
        assert a.status == 200 and K(HOST, "POST", "/b/p/1") in gw.app.lanes
        assert K(HOST, "GET", "/b/p/1") not in gw.app.lanes
        assert len(gw.serve_now_calls) == calls + 2
    run(tmp_path, t)


SAME_BYTES = [
    # (request path, method, extra headers)
    ("/b/pets/1?x=1&y=a%20b&x=2", "GET", ""),
    ("/b/pets/12?", "GET", ""),
    ("/b/pets/13?a=%zz&b&=c", "GET", ""),
    ("/b/fixed/7", "GET", ""),
    ("/b/fixed/7?a=b&c", "GET", ""),
    ("/b/pets/a%20b", "GET", ""),
    ("/b/pets/caf%C3%A9%3F%23x%25", "GET", ""),
    ("/b/pets/A~b.c-d_e!$&'()*+,;=:@", "GET", ""),
    ("/b/p/deep/a%20b/c%3F/%C3%A9", "GET", ""),
    ("/b/pets/2", "GET", "X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\nX-Forwarded-Proto: https\r\n"
                         "User-Agent: t/1\r\nAccept: */*\r\nX-Trace: abc\r\nTE: trailers\r\n"
                         "Keep-Alive: timeout=9\r\nCookie: a=b\r\n"),
    ("/b/pets/3", "GET", "Connection: close\r\n"),
    ("/b/pets/4", "GET", "Connection: keep-alive\r\n"),
    ("/b/p/orders", "POST", "Content-Length: 0\r\n"),
    ("/b/p/orders/9", "DELETE", ""),
    ("/b/p/closing/1", "GET", ""),             # the upstream closes after its answer
]


def test_lane_and_app_path_send_and_answer_the_same_bytes(tmp_path):
    async def t(up: Upstream, gw: Gateway):
        for path, method, extra in SAME_BYTES:
            raw = request(path, method, extra)
            key = K(HOST, method, path.split("?")[0])
            answers, heads = await both_ways(up, gw, raw, key)
            assert_same(answers, heads)
            assert answers[0].status == 200, (path, answers[0].raw)
            assert len(heads[1]) == 1
        # what the upstream saw, once: the query intact, the fixed query first, the path
        # parameter re-encoded, hop-by-hop headers dropped, X-Forwarded-* appended
        h = [x for x in up.heads if b"X-Trace" in x or b"x-trace" in x][-1].decode("latin-1")
        assert h.startswith("GET /pets/2 HTTP/1.1\r\n")
        low = h.lower()
        assert "te:" not in low and "keep-alive:" not in low and "x-trace: abc" in low
        assert "x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.1" in low
        fixed = [x for x in up.heads if x.startswith(b"GET /pets/7?")]
        assert fixed[-1].startswith(b"GET /pets/7?fixed=1&a=b&c HTTP/1.1")
    run(tmp_path, t)


def test_request_ids_and_the_header_name(tmp_path):
    async def t(up: Upstream, gw: Gateway):
        await warm(gw)
        answers = [await call(gw, request("/b/pets/5")) for _ in range(5)]
        assert len(gw.serve_now_calls) == 2          # warm-up and the first: the rest by the lane
        rids = [a.rid for a in answers]
        assert len(set(rids)) == 5 and all(UUID4.match(r) for r in rids)
        assert all(a.header("x-request-id") == a.rid for a in answers)
    run(tmp_path, t)


def _expire_idle(gw: Gateway):
    async def before():
        # the idle connection has outlived the pool's idle timeout: the pool is "ready"
        # but start() finds nothing usable (the lane's own fallback to the integration)
        assert gw.pool.ready()
        for c in gw.pool._idle:
            c.idle_since -= 3600.0
    return before


def _drop_next(up: Upstream):
    async def before():
        up.drop_next = 1
    return before


def _close_idle(up: Upstream):
    async def before():
        await up.close_idle()
    return before


HAND_BACK = [
    # (name, path, method, expected status, expected body or None, heads per request)
    ("chunked", "/b/p/chunked/1", "GET", 200, b"alpha-beta-gamma", 1),
    ("big", "/b/p/big/1", "GET", 200, bytes(range(256)) * 1200, 1),
    ("mid", "/b/p/mid/1", "GET", 200, bytes(range(256)) * 600, 1),
    ("204", "/b/p/nocontent/1", "GET", 204, b"", 1),
    ("304", "/b/p/notmodified/1", "GET", 304, b"", 1),
    ("head", "/b/p/h/1", "HEAD", 200, None, 1),
    ("timeout", "/b/slow/1", "GET", 504, b'{"message":"Endpoint request timed out"}', 1),
    ("closed-after-reading", "/b/p/drop/1", "GET", 502, b'{"message":"Bad Gateway"}', 2),
    ("post-closed-after-reading", "/b/p/drop/2", "POST", 502, b'{"message":"Bad Gateway"}', 1),
    ("stale", "/b/pets/8", "GET", 200, b'{"method":"GET","target":"/pets/8"}', 2),
    ("idle-closed-by-upstream", "/b/pets/9", "GET", 200,
     b'{"method":"GET","target":"/pets/9"}', 1),
    ("idle-expired", "/b/pets/10", "GET", 200, b'{"method":"GET","target":"/pets/10"}', 1),
]


@pytest.mark.parametrize("name,path,method,status,body,n", HAND_BACK, ids=[c[0] for c in HAND_BACK])
def test_hand_back_is_answered_like_the_app_path(tmp_path, name, path, method, status, body, n):
    async def t(up: Upstream, gw: Gateway):
        before = {"stale": _drop_next(up), "idle-closed-by-upstream": _close_idle(up),
                  "idle-expired": _expire_idle(gw)}.get(name)
        # the upstream closing its idle connection: the pool sees it, the lane declines
        # (no idle connection) and the app's entry takes the request
        lane_taken = name != "idle-closed-by-upstream"
        answers, heads = await both_ways(up, gw, request(path, method), K(HOST, method, path),
                                         head_only=method == "HEAD", lane_taken=lane_taken,
                                         before=before)
        assert_same(answers, heads)
        lane = answers[1]
        assert lane.status == status, lane.raw[:300]
        if body is not None:
            assert lane.body == body
        else:   # HEAD: the length a GET would get
            assert lane.header("content-length") == str(
                len(orjson.dumps({"method": "HEAD", "target": "/h/1"})))
        assert [len(h) for h in heads] == [n, n, n]
        # the client connection and the pool go on as before
        a = await call(gw, request("/b/pets/after"))
        assert a.status == 200
    run(tmp_path, t)


def test_no_idle_connection_two_clients_at_once(tmp_path):
    """Two client connections send the lane's request at the same time: one gets the idle
    upstream connection, the other needs a new one (the lane declines, the app connects)."""
    async def t(up: Upstream, gw: Gateway):
        path = "/b/pets/11"
        raw = request(path)
        results = {}
        for way in ("lane", "app"):
            gw.app.lanes.clear()
            await up.close_idle()                        # one idle upstream connection
            await warm(gw)
            a = await call(gw, raw)                      # registers the lane
            assert a.status == 200
            if way == "app":
                gw.app.lanes.clear()
            await asyncio.sleep(0.01)
            conns, mark, calls = up.connections, up.mark(), len(gw.serve_now_calls)
            assert len(gw.pool._idle) == 1
            clients = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(2)]
            for _, w in clients:
                w.write(raw)
            answers = [Answer(await read_raw(r)) for r, _ in clients]
            for _, w in clients:
                w.close()
            assert up.connections == conns + 1           # one more upstream connection
            assert len(up.since(mark, "/pets/11")) == 2
            if way == "lane":                            # one by the lane, one declined
                assert len(gw.serve_now_calls) == calls + 1
            else:
                assert len(gw.serve_now_calls) == calls + 2
            results[way] = answers
            results[way + "-heads"] = up.since(mark, "/pets/11")
        assert [a.norm for a in results["lane"]] == [a.norm for a in results["app"]]
        assert all(a.status == 200 for a in results["lane"])
        assert len({a.rid for a in results["lane"] + results["app"]}) == 4
        assert results["lane-heads"] == results["app-heads"]
    run(tmp_path, t)


@pytest.mark.parametrize("path", ["/b/limited/1", "/t/pets/1"], ids=["route", "stage"])
def test_throttle_refusals_are_counted_once(tmp_path, path):
    """burst 3, no refill to speak of: of 6 requests 3 get through and 3 get the app
    path's 429, with and without the lane."""
    def way(use_lane: bool):
        out = {}

        async def t(up: Upstream, gw: Gateway):
            answers = []
            for _ in range(6):
                answers.append(await call(gw, request(path)))
                await asyncio.sleep(0.01)
                if not use_lane:
                    gw.app.lanes.clear()
            out["answers"] = answers
            port = b"127.0.0.1:%d" % up.port
            out["heads"] = [h.replace(port, b"127.0.0.1:PORT") for h in up.heads]
            out["calls"] = len(gw.serve_now_calls)
        run(tmp_path / ("lane" if use_lane else "app"), t)
        return out

    lane, app = way(True), way(False)
    assert [a.status for a in lane["answers"]] == [200, 200, 200, 429, 429, 429]
    assert [a.norm for a in lane["answers"]] == [a.norm for a in app["answers"]]
    assert orjson.loads(lane["answers"][-1].body) == {"message": "Too Many Requests"}
    assert len(lane["heads"]) == len(app["heads"]) == 3
    assert lane["heads"] == app["heads"]
    assert lane["calls"] == 1 + 3        # the first, and the three refusals handed back
    assert app["calls"] == 6


def test_routes_that_need_the_app_never_get_a_lane(tmp_path):
    async def t(up: Upstream, gw: Gateway):
        cases = [
            (request("/b/keyed/1", extra="x-api-key: secret-key-1\r\n"), 200),
            (request("/b/keyed/1"), 403),
            (request("/c/pets/1"), 200),                 # a cached stage
            (request("/b/cached/1"), 200),               # a cached route
            (request("/b/mock"), 200),
            (request("/b/link/x/1"), 200),               # a VPC link
            (request("/b/perclient/1"), 200),            # a per-client throttle
            (request("/b/policed/1"), 200),              # a resource policy
            (request("/b/nope"), 403),
            (request("/zz/pets/1"), 403),
            (request("/b/pets/a%2Fb"), 400),             # a path the router refuses
        ]
        for raw, status in cases:
            for _ in range(3):
                a = await call(gw, raw)
                assert a.status == status, (raw, a.raw[:300])
                await asyncio.sleep(0.005)
            assert gw.app.lanes == {}, raw
        assert len(gw.serve_now_calls) == 3 * len(cases)
        # the control: a plain route in the same gateway does get one
        assert (await call(gw, request("/b/pets/1"))).status == 200
        assert list(gw.app.lanes) == [K(HOST, "GET", "/b/pets/1")]
    run(tmp_path, t)


def test_access_log_lines_are_the_same_shape(tmp_path):
    async def t(up: Upstream, gw: Gateway):
        await warm(gw)
        log = gw.app._log_buf
        log.clear()
        sent = []
        for path in ["/b/pets/1?x=1", "/b/pets/1?x=1", "/b/pets/1?y=2", "/b/p/chunked/2",
                     "/b/p/chunked/2", "/b/p/drop/3", "/b/p/drop/3", "/b/p/big/4",
                     "/b/p/big/4", "/b/nope"]:
            await warm(gw)       # an idle upstream connection for each (the drops take it)
            a = await call(gw, request(path))
            sent.append((path, a.status, a.rid))
        assert [s for _, s, _ in sent] == [200, 200, 200, 200, 200, 502, 502, 200, 200, 403]
        # the second and third of /b/pets/1 and each second one: through the lane
        assert [c for c in gw.serve_now_calls if c[1] != "/b/p/warm"] == [
            ("GET", "/b/pets/1"), ("GET", "/b/p/chunked/2"), ("GET", "/b/p/drop/3"),
            ("GET", "/b/p/big/4"), ("GET", "/b/nope")]
        log = [ln for ln in log if "/b/p/warm" not in ln]
        assert len(log) == len(sent), log
        line = re.compile(r'^127\.0\.0\.1 - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\] '
                          r'"GET (\S+) HTTP/1\.1" (\d{3}) (\S+) \d+\.\d{3}ms\n$')
        for text, (path, status, rid) in zip(log, sent):
            m = line.match(text)
            assert m, text
            assert m.groups() == (path, str(status), rid), text
    run(tmp_path, t, access_log=True)


def test_client_gone_while_the_lane_waits(tmp_path):
    """A client that closes while its forwarded request waits for the upstream: the late
    answer is dropped, the upstream connection goes back to the pool and serves the next
    request, and nothing is raised."""
    async def t(up: Upstream, gw: Gateway):
        await warm(gw)
        assert (await call(gw, request("/b/p/slow/1"))).status == 200    # makes the lane
        calls, conns, mark = len(gw.serve_now_calls), up.connections, up.mark()
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        w.write(request("/b/p/slow/1"))
        await w.drain()
        await asyncio.sleep(0.05)
        w.close()                                   # gone before the answer
        await asyncio.sleep(0.4)                    # the answer arrives meanwhile
        a = await call(gw, request("/b/p/slow/1"))
        assert a.status == 200
        assert len(gw.serve_now_calls) == calls     # both by the lane
        assert len(up.since(mark, "/slow/1")) == 2
        assert up.connections == conns              # the same upstream connection again
    run(tmp_path, t)


def test_whole_200_answers_are_relayed(tmp_path, monkeypatch):
    """A lane's whole 200 answer in one upstream read is written from that read (the relay,
    lane._relay, no response object made); any other answer is declined by it and goes the
    block-mode path; an upstream that closes after a relayed answer is not used again."""
    h1client = gwcore.load("h1client")
    relay = proxy.app._lane_mod._relay
    seen: list[bool] = []

    def hook(conn, data):
        r = relay(conn, data)
        seen.append(r)
        return r
    monkeypatch.setattr(h1client, "relay_hook", hook)

    async def t(up: Upstream, gw: Gateway):
        await warm(gw)
        for path, status in (("/b/pets/5", 200), ("/b/p/nocontent", 204), ("/b/p/mid", 200),
                             ("/b/p/closing/2", 200)):
            assert (await call(gw, request(path))).status == status    # makes the lane
            await warm(gw)                          # an idle upstream connection at hand
            seen.clear()
            a = await call(gw, request(path))
            assert a.status == status
            assert seen == [path in ("/b/pets/5", "/b/p/closing/2")], (path, seen)
        # the warm-up, the four first requests, and the warm-up after /closing/2 (whose
        # upstream connection closed: no idle one for its lane)
        assert len(gw.serve_now_calls) == 6
        # the upstream closed after /closing/2: the next request opens a new connection
        conns = up.connections
        assert (await call(gw, request("/b/pets/5"))).status == 200
        assert up.connections == conns + 1
        assert (await call(gw, request("/b/pets/5"))).status == 200
        assert up.connections == conns + 1         # and keeps it
    run(tmp_path, t)


def test_targets_a_lane_may_write():
    """The config refuses URIs with whitespace; the lane checks again what it writes without
    h1client's encode_head (which refuses such a request line on the app's path)."""
    from proxy.app import _clean_target
    assert _clean_target("/pets/1") and _clean_target("/pets/1fixed=1&a=%20") \
        and _clean_target("127.0.0.1:8080")
    for bad in ("", "/a b", "/a\tb", "/a\r\nX: y", "/a\x00", "host\n"):
        assert not _clean_target(bad), bad


def test_an_upstream_connection_a_lane_used_serves_the_awaited_path(tmp_path):
    """A lane asks the upstream client for the scanner's block form of the answer; the same
    keep-alive connection, next used by the app's awaited path (a request with a body),
    must give that request's answer with its headers as lists again."""
    async def t(up: Upstream, gw: Gateway):
        await warm(gw)
        assert (await call(gw, request("/b/p/x/1"))).status == 200        # makes the lane
        calls = len(gw.serve_now_calls)
        assert (await call(gw, request("/b/p/x/1"))).status == 200        # by the lane
        assert len(gw.serve_now_calls) == calls
        conns = up.connections
        post = request("/b/p/x/2", "POST", "Content-Length: 5\r\n") + b"hello"
        a = await call(gw, post)                                          # the awaited path
        assert len(gw.serve_now_calls) == calls + 1
        assert a.status == 200
        assert ("x-up", "1") in a.headers and ("server", "up") in a.headers, a.headers
        assert orjson.loads(a.body) == {"method": "POST", "target": "/x/2"}
        assert up.connections == conns                                    # the same one
    run(tmp_path, t)


def test_a_failing_log_does_not_reach_the_upstream_connection(tmp_path, caplog):
    """The lane's upstream callback runs inside the upstream connection's data_received:
    an exception there (here: the access log) is logged, the answer already written stays,
    and both connections go on serving."""
    async def t(up: Upstream, gw: Gateway):
        await warm(gw)
        first = await call(gw, request("/b/pets/1"))         # app path: makes the lane
        assert first.status == 200

        def broken(*a):
            raise RuntimeError("log sink gone")
        gw.app._log = broken
        calls = len(gw.serve_now_calls)
        r, w = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            for _ in range(3):                                # one client connection
                w.write(request("/b/pets/1"))
                a = Answer(await read_raw(r))
                assert a.status == 200
        finally:
            w.close()
        assert len(gw.serve_now_calls) == calls               # all three by the lane
        assert "forwarding the answer failed" in caplog.text
    run(tmp_path, t, access_log=True)


def test_lane_table_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(proxy.app, "LANES_MAX", 3)

    async def t(up: Upstream, gw: Gateway):
        await warm(gw)
        gw.app.lanes.clear()
        for rnd in range(2):
            for i in range(5):
                path = f"/b/pets/m{i}"
                a = await call(gw, request(path))
                assert a.status == 200 and orjson.loads(a.body)["target"] == f"/pets/m{i}"
                assert len(gw.app.lanes) <= 3
                assert K(HOST, "GET", path) in gw.app.lanes
                # its lane serves the next one
                calls = len(gw.serve_now_calls)
                a = await call(gw, request(path))
                assert a.status == 200 and orjson.loads(a.body)["target"] == f"/pets/m{i}"
                assert len(gw.serve_now_calls) == calls
        assert len(up.since(0, "/pets/m")) == 20
    run(tmp_path, t)


@pytest.mark.skipif(bool(os.environ.get(CHILD)), reason="already the pure twin's run")
def test_pure_twin_in_a_subprocess():
    """This file's tests again on the pure-Python twins (chosen at import: a new process)."""
    env = dict(os.environ, GWCORE_PURE="1", **{CHILD: "1"})
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-2000:]
    assert " passed" in p.stdout and "failed" not in p.stdout
