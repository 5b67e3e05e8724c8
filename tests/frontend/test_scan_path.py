"""The scanned fast path and the llhttp path are indistinguishable to their users.

``gwcore.http1.Connection.data_received`` hands a read that is exactly one whole body-less
request head (connection between messages, nothing pending) to ``h1scan.scan_request``,
and ``gwcore.h1client.Connection.data_received`` hands the first read of a response that is
exactly one whole Content-Length response to ``h1scan.scan_response``; whatever they refuse
goes to llhttp (httptools) as before. Here the same bytes are delivered three ways:

- ``scanned``: whole, in one read: the scanner takes it;
- ``llhttp``: whole, in one read, with the scanner switched off (the module's scanner name
  answers None): llhttp parses the very same read;
- ``split``: in two reads, cut inside the head: the scanner refuses the first (partial) read
  and llhttp parses both;

and what the app (front end) or the caller (upstream client) sees, what goes on the wire
and what becomes of the connection must be the same. The front-end tests run on both
``http1`` twins with both ``h1scan`` twins behind them (fake transport, no sockets); the
upstream tests run on both ``h1client`` twins against a loopback server. That a read was
scanned is checked from two sides: the module's ``_scan_request`` / ``_scan_response`` is
wrapped to record what it took (patching the module attribute works on the compiled twins
too: the name is looked up at call time), and the llhttp parser is wrapped to record what
it was fed (nothing, for a scanned read).
"""
from __future__ import annotations

import asyncio

import httptools
import pytest

import gwcore
from tests.h1wire import Transport, request_view

HTTP1 = gwcore.twins("http1")
H1SCAN = gwcore.twins("h1scan")
H1CLIENT = gwcore.twins("h1client")

T = 3.0            # upper bound of every single wait
PAUSE = 0.05       # between the two writes of a split response
DATE = b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"   # the front end's Date header, frozen


# -- recording stand-ins ---------------------------------------------------------------------

class Scanner:
    """Stands in for a module's ``_scan_request`` / ``_scan_response``: calls the real scanner
    (unless switched off, then answers None without recording) and records each result."""

    def __init__(self, fn):
        self.fn = fn
        self.on = True
        self.calls: list = []

    def __call__(self, *args):
        if not self.on:
            return None
        r = self.fn(*args)
        self.calls.append(r)
        return r


class FedParser:
    """An httptools parser that records every ``feed_data`` (everything else passes through)."""

    def __init__(self, inner, log: list):
        self._inner = inner
        self._log = log

    def feed_data(self, data):
        self._log.append(bytes(data))
        return self._inner.feed_data(data)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def head_end(raw: bytes) -> int:
    return raw.index(b"\r\n\r\n") + 4


def split_at(raw: bytes, way: str) -> int | None:
    """Where ``way`` cuts ``raw`` in two reads (always inside the head), None for one read."""
    end = head_end(raw)
    return {"split-1": 1, "split": end // 2, "split-mid": end // 2, "split-last": end - 1}.get(way)


# =============================================================================================
# 1. the front end (gwcore.http1)
# =============================================================================================

class App:
    """Records each request and answers it at once (serve_now returns None)."""

    def __init__(self):
        self.seen: list = []

    def serve_now(self, ex, peer):
        self.seen.append(request_view(ex, peer))
        ex.response_bytes(200, [("content-type", "text/plain"),
                                ("x-seen", f"{ex.method} {ex.path}?{ex.query}")], b"ok")
        return None


class Client:
    """One fresh front-end connection on a fake transport, with its parser recorded."""

    def __init__(self, mod, scanner: Scanner, loop, max_header_bytes: int):
        self.scanner = scanner
        self.app = App()
        self.server = mod.FrontendServer(self.app, loop, max_header_bytes=max_header_bytes)
        self.conn = mod.Connection(self.server)
        self.t = Transport()
        self.conn.connection_made(self.t)
        self.fed: list = []
        self.conn.parser = FedParser(self.conn.parser, self.fed)

    def send(self, raw: bytes, way: str) -> None:
        """Deliver ``raw`` the ``way`` given (see the module docstring)."""
        self.scanner.on = way != "llhttp"
        k = split_at(raw, way)
        if k is None:
            self.conn.data_received(raw)
        else:
            self.conn.data_received(raw[:k])
            self.conn.data_received(raw[k:])
        self.scanner.on = True

    def outcome(self) -> dict:
        c = self.conn
        return {
            "seen": self.app.seen, "events": self.t.events, "closed": self.t.closed,
            "current": c.current is None, "parsing": c.parsing is None, "queue": len(c.queue),
            "lingering": c.lingering, "pending_reject": c.pending_reject,
        }


class Front:
    def __init__(self, mod, scanner, loop):
        self.mod = mod
        self.scanner = scanner
        self.loop = loop

    def client(self, max_header_bytes: int = 16384) -> Client:
        self.scanner.calls.clear()
        return Client(self.mod, self.scanner, self.loop, max_header_bytes)


FRONT_IDS = [f"http1-{h}/scan-{s}" for h, _ in HTTP1 for s, _ in H1SCAN]


@pytest.fixture(params=[(h, s) for h in HTTP1 for s in H1SCAN], ids=FRONT_IDS)
def front(request, monkeypatch):
    (_, mod), (_, scan) = request.param
    scanner = Scanner(scan.scan_request)
    monkeypatch.setattr(mod, "_scan_request", scanner)
    monkeypatch.setattr(mod.CLOCK, "date", DATE)
    loop = asyncio.new_event_loop()
    try:
        yield Front(mod, scanner, loop)
    finally:
        loop.close()


WAYS = ("scanned", "llhttp", "split-1", "split-mid", "split-last")

#: requests the scanner takes, and (part of) what the app must see of them
SCANNED = {
    "wrk-get": (b"GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n",
                dict(method="GET", path="/", query="", host="localhost:8080", keep_alive=True)),
    "query": (b"GET /items/42?a=1&b=?x HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\n"
              b"Accept: */*\r\n\r\n",
              dict(method="GET", path="/items/42", query="a=1&b=?x", host="api.example.com")),
    "percent-path": (b"GET /a%20b/%E2%82%AC?q=%3F HTTP/1.1\r\nHost: h\r\n\r\n",
                     dict(path="/a%20b/%E2%82%AC", query="q=%3F")),
    "head": (b"HEAD /status HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
             dict(method="HEAD", head=True, keep_alive=True)),
    "delete-cl0": (b"DELETE /items/7 HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
                   dict(method="DELETE", path="/items/7", body_complete=True)),
    "post-no-body": (b"POST /ping HTTP/1.1\r\nHost: h\r\n\r\n", dict(method="POST", body_complete=True)),
    "options": (b"OPTIONS /cors HTTP/1.1\r\nHost: h\r\nOrigin: https://a.example\r\n"
                b"Access-Control-Request-Method: PUT\r\n\r\n", dict(method="OPTIONS")),
    "connection-close": (b"GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
                         dict(keep_alive=False)),
    "close-and-keep-alive": (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                             dict(keep_alive=False)),
    "duplicate-host": (b"GET / HTTP/1.1\r\nHost: first.example\r\nX-A: 1\r\nHost: second.example\r\n\r\n",
                       dict(host="first.example")),
    "no-host": (b"GET /x HTTP/1.1\r\nUser-Agent: t\r\n\r\n", dict(host="")),
    "mixed-case": (b"GET /A/b HTTP/1.1\r\nhOsT: Mixed.Example\r\nX-Request-ID: AbC\r\n"
                   b"ACCEPT-encoding: gzip, br\r\nConnection: Keep-Alive\r\ncontent-LENGTH: 0\r\n\r\n",
                   dict(host="Mixed.Example", keep_alive=True,
                        headers=[("host", "Mixed.Example"), ("x-request-id", "AbC"),
                                 ("accept-encoding", "gzip, br"), ("connection", "Keep-Alive"),
                                 ("content-length", "0")])),
    "ows": (b"GET / HTTP/1.1\r\nHost:h\r\nX-Tab:\t\tv  w\r\nX-Sp:   s\r\n\r\n",
            dict(host="h", headers=[("host", "h"), ("x-tab", "v  w"), ("x-sp", "s")])),
}

FOLLOW_1 = b"GET /next?n=1 HTTP/1.1\r\nHost: h\r\n\r\n"
FOLLOW_2 = b"GET /next?n=2 HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"


def check_path(client: Client, raw: bytes, way: str) -> None:
    """The read went where ``way`` says: scanner (llhttp never fed) or llhttp."""
    calls, fed = client.scanner.calls, client.fed
    if way == "scanned":
        assert len(calls) == 1 and calls[0] is not None, "the scanner did not take it"
        assert fed == [], "llhttp was fed a scanned request"
    elif way == "llhttp":
        assert calls == [] and fed == [raw]
    else:
        k = split_at(raw, way)
        # the partial first read is offered to the scanner and refused; the rest never is
        assert calls == [None]
        assert fed == [raw[:k], raw[k:]]


@pytest.mark.parametrize("raw,expected", SCANNED.values(), ids=SCANNED.keys())
def test_scanned_and_llhttp_requests_look_the_same(front, raw, expected):
    outcomes = {}
    for way in WAYS:
        c = front.client()
        c.send(raw, way)
        check_path(c, raw, way)
        if not c.t.closed:
            # the connection is at a message boundary either way: more requests, both paths
            c.send(FOLLOW_1, "scanned")
            c.send(FOLLOW_2, "split-mid")
            assert len(c.app.seen) == 3
        outcomes[way] = c.outcome()
    first = outcomes["scanned"]["seen"][0]
    for k, v in expected.items():
        assert first[k] == v, (k, first[k])
    assert first["http_version"] == "1.1"
    assert first["body_complete"] is True and first["buffered_body"] == b""
    for way in WAYS[1:]:
        assert outcomes[way]["seen"] == outcomes["scanned"]["seen"], way
        assert outcomes[way]["events"] == outcomes["scanned"]["events"], way
        assert outcomes[way] == outcomes["scanned"], way


def test_keep_alive_requests_on_one_connection(front):
    c = front.client()
    paths = []
    for i, way in enumerate(("scanned", "split-mid", "scanned", "llhttp", "split-last", "scanned")):
        front.scanner.calls.clear()
        c.fed.clear()
        raw = b"GET /r%d HTTP/1.1\r\nHost: h\r\n\r\n" % i
        c.send(raw, way)
        check_path(c, raw, way)
        paths.append(f"/r{i}")
    assert [s["path"] for s in c.app.seen] == paths
    out = c.t.written()
    assert out.count(b"HTTP/1.1 200 OK\r\n") == len(paths)
    assert [line.split(b" ", 2)[2][:-1] for line in out.split(b"\n") if line.startswith(b"x-seen")] == \
           [p.encode() + b"?" for p in paths]
    assert b"connection: close" not in out and not c.t.closed


@pytest.mark.parametrize("way", WAYS)
def test_connection_close_request_closes_after_the_answer(front, way):
    c = front.client()
    raw = b"GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    c.send(raw, way)
    check_path(c, raw, way)
    kinds = [e[0] for e in c.t.events]
    assert kinds == ["write", "close"]
    assert c.t.events[0][1] == (b"HTTP/1.1 200 OK\r\n" + DATE + b"content-type: text/plain\r\n"
                                b"x-seen: GET /bye?\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")


#: requests the scanner refuses (llhttp serves them), and what the app must see of them
REFUSED = {
    "body": (b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
             dict(method="POST", buffered_body=b"hello", body_complete=True)),
    "chunked": (b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                dict(method="POST", buffered_body=b"hello", body_complete=True)),
    "content-length-00": (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 00\r\n\r\n", dict(body_complete=True)),
    "fragment": (b"GET /p?q=1#frag HTTP/1.1\r\nHost: h\r\n\r\n", dict(path="/p", query="q=1")),
    "http-1.0": (b"GET /old HTTP/1.0\r\nHost: h\r\n\r\n", dict(http_version="1.0", keep_alive=False)),
    "empty-value": (b"GET / HTTP/1.1\r\nHost: h\r\nX-Empty:\r\n\r\n",
                    dict(headers=[("host", "h"), ("x-empty", "")])),
    "connection-list": (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, x-foo\r\n\r\n",
                        dict(keep_alive=True)),
}


@pytest.mark.parametrize("raw,expected", REFUSED.values(), ids=REFUSED.keys())
def test_requests_the_scanner_refuses_still_work_through_llhttp(front, raw, expected):
    outcomes = {}
    for way in ("scanned", "split-mid"):
        c = front.client()
        c.send(raw, way)
        if way == "scanned":      # offered to the scanner, refused, parsed by llhttp
            assert front.scanner.calls == [None]
            assert c.fed == [raw]
        seen = c.app.seen
        assert len(seen) == 1
        for k, v in expected.items():
            assert seen[0][k] == v, (k, seen[0][k])
        assert c.t.written().startswith(b"HTTP/1.1 200 OK\r\n")
        outcomes[way] = c.outcome()
    assert outcomes["scanned"] == outcomes["split-mid"]


def test_two_pipelined_requests_in_one_read_go_to_llhttp_in_order(front):
    c = front.client()
    raw = b"GET /one HTTP/1.1\r\nHost: h\r\n\r\nGET /two?x=2 HTTP/1.1\r\nHost: h\r\n\r\n"
    c.send(raw, "scanned")
    assert front.scanner.calls == [None]         # more than one message: refused
    assert c.fed == [raw]
    assert [(s["path"], s["query"]) for s in c.app.seen] == [("/one", ""), ("/two", "x=2")]
    out = c.t.written()
    assert out.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert out.index(b"x-seen: GET /one?") < out.index(b"x-seen: GET /two?x=2")
    assert not c.t.closed
    # and the connection goes on, scanned again
    front.scanner.calls.clear()
    c.send(FOLLOW_1, "scanned")
    assert front.scanner.calls[0] is not None and c.fed == [raw]
    assert len(c.app.seen) == 3


@pytest.mark.parametrize("bad", [b"GARBAGE\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
                                 b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"],
                         ids=["garbage", "space-in-name", "two-content-lengths"])
def test_scanned_request_then_a_malformed_one_is_200_then_400(front, bad):
    outcomes = {}
    for way in WAYS:
        c = front.client()
        raw = b"GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"
        c.send(raw, way)
        check_path(c, raw, way)
        c.send(bad, "scanned")
        out = c.t.written()
        assert out.startswith(b"HTTP/1.1 200 OK\r\n")
        second = out[out.index(b"\r\n\r\nok") + 6:]
        assert second.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert b"connection: close\r\n" in second and second.endswith(b'{"message":"Bad Request"}')
        assert c.t.closed and c.t.events[-1] == ("close",)
        assert [s["path"] for s in c.app.seen] == ["/ok"]
        outcomes[way] = c.outcome()
    for way in WAYS[1:]:
        assert outcomes[way] == outcomes["scanned"], way


def near_limit_request(limit: int) -> bytes:
    """A GET of exactly ``limit`` bytes whose header lines are written without OWS
    (``name:value``): llhttp's path counts each header as name + value + 4 bytes against
    the limit (``head_bytes``), one more than such a line takes on the wire."""
    lines = [b"GET /big HTTP/1.1\r\n", b"Host:h\r\n"] + [b"x-%02d:v\r\n" % i for i in range(30)]
    pad = limit - sum(map(len, lines)) - 2 - len(b"x-pad:\r\n")
    lines.append(b"x-pad:" + b"p" * pad + b"\r\n")
    raw = b"".join(lines) + b"\r\n"
    assert len(raw) == limit
    return raw


def test_header_size_limit_is_the_same_on_both_paths(front):
    """A head the scanner takes must not be one llhttp's path answers with 431."""
    raw = near_limit_request(16384)
    outcomes = {}
    for way in ("scanned", "llhttp", "split-mid"):
        c = front.client(max_header_bytes=16384)
        c.send(raw, way)
        if way != "scanned":        # offered to the scanner, which must decline it
            check_path(c, raw, way)
        outcomes[way] = (c.t.written().split(b"\r\n", 1)[0], c.t.closed, len(c.app.seen))
    assert outcomes["llhttp"] == outcomes["split-mid"]
    assert outcomes["scanned"] == outcomes["llhttp"], outcomes
    assert outcomes["llhttp"][0].startswith(b"HTTP/1.1 431 "), outcomes


# =============================================================================================
# 2. the upstream client (gwcore.h1client)
# =============================================================================================

WARM = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwarm"
JSON = b'{"id":42,"name":"widget","tags":["a","b"],"price":9.5,"ok":true}'
HOST = [("Host", "up.example")]

#: responses the scanner takes
RESPONSES = {
    "nginx-200-json": (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.25.3\r\nDate: Sun, 22 Nov 2026 12:00:00 GMT\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n"
        b"Keep-Alive: timeout=5\r\nX-Request-Id: 7f3a9c\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\n%b"
        % (len(JSON), JSON)),
    "404-empty": (b"HTTP/1.1 404 Not Found\r\nServer: nginx\r\nContent-Type: text/html\r\n"
                  b"Content-Length: 0\r\n\r\n"),
    "connection-close": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n"
                         b"Connection: close\r\n\r\nhello"),
    "mixed-case-503": (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nCONTENT-LENGTH: 4\r\n"
                       b"Retry-After: 1\r\nx-Amzn-RequestId: r-1\r\nconnection: Keep-Alive\r\n"
                       b"proxy-authenticate: Basic\r\n\r\nbusy"),
}
KEEPS = {"nginx-200-json": True, "404-empty": True, "connection-close": False, "mixed-case-503": True}
UP_WAYS = ("scanned", "llhttp", "split")


class Upstream:
    """A loopback HTTP/1.1 server: answers ``/warm`` with WARM (one write) and every other
    request with ``raw`` (two writes ``PAUSE`` apart, cut at ``split``, when given); closes
    after an answer that says ``Connection: close``. Counts the connections it accepted."""

    def __init__(self, raw: bytes, split: int | None):
        self.raw = raw
        self.split = split
        self.connections = 0
        self.targets: list = []
        self.tasks: set = set()

    async def start(self) -> "Upstream":
        self.server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _on_conn(self, reader, writer):
        self.connections += 1
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                self.targets.append((self.connections, target))
                raw = WARM if target == b"/warm" else self.raw
                if self.split is None or raw is WARM:
                    writer.write(raw)
                else:
                    writer.write(raw[:self.split])
                    await writer.drain()
                    await asyncio.sleep(PAUSE)
                    writer.write(raw[self.split:])
                await writer.drain()
                if b"\r\nconnection: close\r\n" in raw.lower():
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.tasks.discard(task)
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        for t in list(self.tasks):
            t.cancel()
        await self.server.wait_closed()
        await asyncio.sleep(0.01)


def response_view(resp) -> dict:
    """Everything a caller can see of an UpstreamResponse once its head is in."""
    return {
        "status": resp.status, "headers": list(resp.headers), "forward": list(resp.forward_headers()),
        "content_length": resp.content_length, "keep_alive": resp.keep_alive,
        "http_version": resp.http_version, "chunked": resp.chunked, "has_body": resp.has_body(),
        "complete": resp.complete,
    }


@pytest.fixture(params=H1CLIENT, ids=[f"h1client-{n}" for n, _ in H1CLIENT])
def upstream(request, monkeypatch):
    """(module, scanner, feeds): the twin with its scanner wrapped and every llhttp parser it
    makes recording what it is fed."""
    _, mod = request.param
    scanner = Scanner(mod._scan_response)
    monkeypatch.setattr(mod, "_scan_response", scanner)
    fed: list = []
    monkeypatch.setattr(mod, "HttpResponseParser", lambda proto: FedParser(httptools.HttpResponseParser(proto), fed))
    return mod, scanner, fed


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 10.0))


def check_response_path(scanner: Scanner, fed: list, raw: bytes, way: str, n: int) -> None:
    """``n`` responses ``raw`` went where ``way`` says."""
    if way == "scanned":
        assert len(scanner.calls) == n and all(r is not None for r in scanner.calls), "not scanned"
        assert fed == [], "llhttp was fed a scanned response"
    elif way == "llhttp":
        assert scanner.calls == [] and fed == [raw] * n
    else:
        k = split_at(raw, way)
        assert scanner.calls == [None] * n
        assert fed == [raw[:k], raw[k:]] * n


async def by_request(mod, scanner, fed, raw, way) -> list:
    """Two ``await pool.request(...)`` on a fresh pool, each response seen whole."""
    srv = await Upstream(raw, split_at(raw, way)).start()
    pool = mod.UpstreamPool("127.0.0.1", srv.port)
    scanner.calls.clear()
    fed.clear()
    scanner.on = way != "llhttp"
    out = []
    try:
        for i in range(2):
            resp = await pool.request("GET", f"/t{i}", HOST, None, timeout=T)
            v = response_view(resp)
            v["stats_at_head"] = pool.stats()
            v["body"] = await resp.read()
            await resp.aclose()
            v["stats"] = pool.stats()
            v["server_connections"] = srv.connections
            out.append(v)
        check_response_path(scanner, fed, raw, way, 2)
    finally:
        scanner.on = True
        await pool.close()
        await srv.stop()
    return out


@pytest.mark.parametrize("raw", RESPONSES.values(), ids=RESPONSES.keys())
def test_upstream_request_scanned_and_llhttp_responses_look_the_same(upstream, raw):
    mod, scanner, fed = upstream
    outcomes = {way: run(by_request(mod, scanner, fed, raw, way)) for way in UP_WAYS}
    keep = KEEPS[[k for k, v in RESPONSES.items() if v is raw][0]]
    first, second = outcomes["scanned"]
    assert first["keep_alive"] is keep and first["complete"] is True
    assert first["body"] == raw[head_end(raw):]
    assert first["content_length"] == len(first["body"])
    assert first["forward"] == mod.strip_response(first["headers"])
    if keep:        # the second request reused the connection
        assert first["stats"]["idle"] == 1 and second["stats"]["idle"] == 1
        assert second["server_connections"] == 1
    else:           # closed after the answer; the second one needed a new connection
        assert first["stats"]["open"] == 0 and second["stats"]["open"] == 0
        assert second["server_connections"] == 2
    for way in UP_WAYS[1:]:
        assert outcomes[way] == outcomes["scanned"], way


async def by_callback(mod, scanner, fed, raw, way) -> list:
    """``pool.start(...)`` (callback mode) on a pool warmed by one request, twice when the
    connection stays (else the second start() is refused and a request opens a new one)."""
    loop = asyncio.get_running_loop()
    srv = await Upstream(raw, split_at(raw, way)).start()
    pool = mod.UpstreamPool("127.0.0.1", srv.port)
    out = []
    try:
        warm = await pool.request("GET", "/warm", HOST, None, timeout=T)
        assert await warm.read() == b"warm"
        scanner.calls.clear()
        fed.clear()
        scanner.on = way != "llhttp"
        n = 0
        for i in range(2):
            fut = loop.create_future()

            def cb(arg, resp, exc, retry, fut=fut):
                info = {"arg": arg, "exc": exc, "retry": retry, "task": asyncio.current_task(),
                        "stats": pool.stats()}
                if resp is not None:
                    info.update(response_view(resp))
                    info["body_now"] = resp.body_now()
                fut.set_result(info)

            if not pool.start("GET", f"/t{i}", HOST, T, cb, i):
                out.append("refused")
                resp = await pool.request("GET", f"/t{i}", HOST, None, timeout=T)
                out.append((response_view(resp), await resp.read(), pool.stats()))
                n += 1
                break
            info = await asyncio.wait_for(fut, T)
            await asyncio.sleep(0.01)         # (a second, wrong call would show up in fut)
            info["server_connections"] = srv.connections
            out.append(info)
            n += 1
        check_response_path(scanner, fed, raw, way, n)
        out.append(("server", srv.connections, [t for _, t in srv.targets]))
    finally:
        scanner.on = True
        await pool.close()
        await srv.stop()
    return out


@pytest.mark.parametrize("raw", RESPONSES.values(), ids=RESPONSES.keys())
def test_upstream_callback_scanned_and_llhttp_responses_look_the_same(upstream, raw):
    mod, scanner, fed = upstream
    outcomes = {way: run(by_callback(mod, scanner, fed, raw, way)) for way in UP_WAYS}
    keep = KEEPS[[k for k, v in RESPONSES.items() if v is raw][0]]
    got = outcomes["scanned"]
    first = got[0]
    assert first["exc"] is None and first["task"] is None and first["arg"] == 0
    assert first["keep_alive"] is keep and first["complete"] is True
    assert first["body_now"] == raw[head_end(raw):]
    if keep:
        assert first["stats"]["idle"] == 1       # back in the pool before the callback
        assert got[1]["server_connections"] == 1 and got[2] == ("server", 1, [b"/warm", b"/t0", b"/t1"])
    else:
        assert first["stats"]["open"] == 0
        assert got[1] == "refused" and got[3] == ("server", 2, [b"/warm", b"/t0", b"/t1"])
    for way in UP_WAYS[1:]:
        assert outcomes[way] == outcomes["scanned"], way
