"""The native HTTP/1.1 front end (gwcore/http1.py, proxy/frontend/supervisor.py), end to end.

Every test runs a real `gwproxy serve` (tests.helpers.GatewayProcess) and talks to it over
raw loopback sockets, so what is asserted is what a client sees on the wire: framing,
ordering, closes and resets, timeouts, worker processes.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import socketserver
import threading
import time

import psutil
import pytest

from tests.helpers import GatewayProcess, ThreadedServer
from tests.upstream import UpstreamServer

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "functions", "fixtures")
NATIVE = ["--frontend", "native"]      # explicit: $GWPROXY_FRONTEND may say granian

MOCK_A = b"A" * 10
MOCK_B = {"b": [1, 2, 3]}
MAX_HEADER = 4096
MAX_BODY = 1048576
BLOCK = bytes(range(256)) * 256        # what tests.upstream's /big sends, 64 KiB at a time


# -- a scripted upstream for what tests.upstream cannot do -----------------------------------

class _ScriptHandler(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        buf = b""
        while b"\r\n\r\n" not in buf:
            part = s.recv(65536)
            if not part:
                return
            buf += part
        path = buf.split(b" ", 2)[1]
        if path.startswith(b"/chunked-die"):
            # a chunked body that never ends: part of it, then the connection closes
            s.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            s.sendall(b"%x\r\n%s\r\n" % (len(BLOCK), BLOCK))
            time.sleep(0.3)
            s.close()
        else:
            s.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


class ScriptedUpstream(ThreadedServer):
    def __init__(self):
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _ScriptHandler)
        super().__init__()


# -- a raw HTTP/1.1 client ------------------------------------------------------------------

class Resp:
    def __init__(self, status: int, head: bytes, headers: list, body: bytes, chunked: bool,
                 interim: list):
        self.status = status
        self.head = head                  # raw status line + header lines
        self.headers = headers            # [(lower-case name, value)]
        self.body = body
        self.chunked = chunked
        self.interim = interim            # raw heads of 1xx responses before this one

    def all(self, name: str) -> list:
        return [v for k, v in self.headers if k == name]

    def header(self, name: str):
        vals = self.all(name)
        assert len(vals) <= 1, (name, vals)
        return vals[0] if vals else None

    def json(self):
        return json.loads(self.body)


class Client:
    """One raw connection; reads responses exactly as framed (no guessing)."""

    def __init__(self, port: int, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _fill(self) -> None:
        part = self.sock.recv(1 << 16)
        if not part:
            raise EOFError("connection closed by the gateway")
        self.buf += part

    def _until(self, sep: bytes) -> bytes:
        while sep not in self.buf:
            self._fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_head(self):
        head = self._until(b"\r\n\r\n")[:-4]
        lines = head.split(b"\r\n")
        assert lines[0].startswith(b"HTTP/1.1 "), head[:200]
        status = int(lines[0].split(b" ")[1])
        headers = []
        for line in lines[1:]:
            k, sep, v = line.partition(b":")
            assert sep, line
            headers.append((k.decode("latin-1").lower(), v.strip().decode("latin-1")))
        return status, head, headers

    def read_response(self, head_request: bool = False) -> Resp:
        interim = []
        while True:
            status, head, headers = self.read_head()
            if 100 <= status < 200:
                interim.append(head)
                continue
            break
        h = {}
        for k, v in headers:
            h.setdefault(k, v)
        chunked = False
        if head_request or status in (204, 304):
            body = b""
        elif "chunked" in h.get("transfer-encoding", "").lower():
            chunked = True
            parts = []
            while True:
                size = int(self._until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    assert self._until(b"\r\n") == b"\r\n"
                    break
                parts.append(self._exact(size))
                assert self._exact(2) == b"\r\n"
            body = b"".join(parts)
        elif "content-length" in h:
            body = self._exact(int(h["content-length"]))
        else:
            body = self.read_to_close()
        return Resp(status, head, headers, body, chunked, interim)

    def read_to_close(self, timeout: float = 10.0) -> bytes:
        """Everything until the gateway closes (FIN or RST); AssertionError on timeout."""
        self.sock.settimeout(timeout)
        data, self.buf = self.buf, b""
        while True:
            try:
                part = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return data
            except socket.timeout:
                raise AssertionError(f"the gateway did not close the connection in {timeout}s")
            if not part:
                return data
            data += part

    def closed_within(self, timeout: float):
        """Seconds until the gateway closes the connection, or None if it is still open."""
        t = time.monotonic()
        self.sock.settimeout(timeout)
        try:
            while True:
                part = self.sock.recv(1 << 16)
                if not part:
                    break
                self.buf += part
        except ConnectionResetError:
            pass
        except socket.timeout:
            return None
        return time.monotonic() - t


def _req(method: str, path: str, headers: dict | None = None, body: bytes = b"",
         version: str = "1.1") -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: gw.test"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _dechunk(data: bytes):
    """(body, complete): complete only when the terminating 0-size chunk was seen."""
    out = bytearray()
    i = 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return bytes(out), False
        n = int(data[i:j].split(b";")[0], 16)
        if n == 0:
            return bytes(out), data[j + 2:j + 4] == b"\r\n"
        if len(data) < j + 2 + n + 2:
            out += data[j + 2:j + 2 + n]
            return bytes(out), False
        out += data[j + 2:j + 2 + n]
        i = j + 2 + n + 2


def _workers(gw: GatewayProcess) -> list:
    return psutil.Process(gw.proc.pid).children(recursive=False)


def _rss_tree(pid: int) -> int:
    p = psutil.Process(pid)
    return sum(c.memory_info().rss for c in [p] + p.children(recursive=True))


# -- gateways -------------------------------------------------------------------------------

def _config(up_port: int, script_port: int) -> str:
    return f"""
server:
  max_body_bytes: {MAX_BODY}
  max_header_bytes: {MAX_HEADER}
functions:
  raw: {{handler: basic.raw, code: "{FIXTURES}", runtime: inline}}
  pid: {{handler: basic.pid, code: "{FIXTURES}", runtime: inline}}
apis:
  web:
    type: http
    routes:
      - route: ANY /mock/a
        integration: {{type: mock, status: 200, headers: {{x-mock: a}}, body: "{MOCK_A.decode()}"}}
      - route: ANY /mock/b
        integration: {{type: mock, status: 201, body: {json.dumps(MOCK_B)}}}
      - route: GET /files/{{name}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{up_port}/echo/{{name}}"}}
      - route: GET /admin
        integration: {{type: mock, body: "admin"}}
      - route: ANY /up/{{proxy+}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{up_port}/{{proxy}}", timeout: 10s}}
      - route: ANY /script/{{proxy+}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{script_port}/{{proxy}}", timeout: 5s}}
      - route: POST /fn
        integration: {{type: aws_proxy, function: raw, payload_format: "2.0"}}
      - route: GET /pid
        integration: {{type: aws_proxy, function: pid, payload_format: "2.0"}}
"""


@pytest.fixture(scope="module")
def upstream():
    with UpstreamServer() as up:
        yield up


@pytest.fixture(scope="module")
def script():
    with ScriptedUpstream() as s:
        yield s


@pytest.fixture(scope="module")
def config(upstream, script):
    return _config(upstream.port, script.port)


@pytest.fixture(scope="module")
def gw(config):
    with GatewayProcess(config, extra_args=NATIVE) as g:
        yield g


# -- 1. keep-alive ----------------------------------------------------------------------------

def test_keep_alive_100_requests_on_one_socket(gw):
    with Client(gw.port) as c:
        for i in range(100):
            path = "/mock/a" if i % 2 else "/mock/b"
            c.send(_req("GET", path))
            r = c.read_response()
            if i % 2:
                assert (r.status, r.body) == (200, MOCK_A), i
            else:
                assert (r.status, r.json()) == (201, MOCK_B), i
            assert r.header("connection") is None, i
        # still open after the 100th answer
        assert c.closed_within(0.3) is None


def test_http10_without_keep_alive_is_closed_after_the_response(gw):
    with Client(gw.port) as c:
        c.send(b"GET /mock/a HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, MOCK_A)
        assert c.closed_within(3) is not None


def test_connection_close_is_honoured(gw):
    with Client(gw.port) as c:
        c.send(_req("GET", "/mock/a", {"Connection": "close"}))
        r = c.read_response()
        assert (r.status, r.body) == (200, MOCK_A)
        assert r.header("connection") == "close"
        assert c.closed_within(3) is not None


# -- 2. pipelining ----------------------------------------------------------------------------

def test_pipelined_requests_are_answered_in_order(gw):
    reqs = [
        (_req("GET", "/mock/a"), lambda r: r.status == 200 and r.body == MOCK_A),
        (_req("GET", "/up/stall?s=0.3"), lambda r: r.status == 200 and r.json() == {"stalled": True}),
        (_req("GET", "/mock/b"), lambda r: r.status == 201 and r.json() == MOCK_B),
        (_req("GET", "/up/echo/p3"), lambda r: r.status == 200 and r.json()["path"] == "/echo/p3"),
        (_req("POST", "/up/echo/p4", body=b"x" * 100),
         lambda r: r.status == 200 and r.json()["path"] == "/echo/p4" and r.json()["body"] == "x" * 100),
        (_req("GET", "/mock/a"), lambda r: r.status == 200 and r.body == MOCK_A),
        (_req("GET", "/up/stall?s=0.2"), lambda r: r.status == 200 and r.json() == {"stalled": True}),
        (_req("GET", "/up/echo/p7"), lambda r: r.status == 200 and r.json()["path"] == "/echo/p7"),
        (_req("GET", "/mock/b"), lambda r: r.status == 201 and r.json() == MOCK_B),
        (_req("GET", "/up/echo/p9?i=9"),
         lambda r: r.status == 200 and r.json()["path"] == "/echo/p9" and r.json()["query"] == "i=9"),
    ]
    with Client(gw.port) as c:
        c.send(b"".join(r for r, _ in reqs))
        for i, (_, ok) in enumerate(reqs):
            r = c.read_response()
            assert ok(r), (i, r.status, r.body[:200])
        assert c.buf == b""


# -- 3. Expect: 100-continue --------------------------------------------------------------------

def test_expect_100_continue_then_final_response(gw, upstream):
    for size in (11, 300_000):            # read whole, and streamed to the upstream
        body = os.urandom(size)
        with Client(gw.port, timeout=5) as c:
            c.send(f"POST /up/upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {size}\r\n"
                   "Expect: 100-continue\r\n\r\n".encode())
            # nothing of the body was sent: the gateway must ask for it
            status, head, _ = c.read_head()
            assert head == b"HTTP/1.1 100 Continue", head
            c.send(body)
            r = c.read_response()
            assert r.status == 200, r.body
            assert r.json() == {"len": size, "sha256": hashlib.sha256(body).hexdigest()}
            assert r.interim == []


def test_expect_100_continue_over_max_body_is_413_without_continue(gw, upstream):
    before = len(upstream.received)
    with Client(gw.port, timeout=5) as c:
        c.send(f"POST /up/upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {MAX_BODY + 1}\r\n"
               "Expect: 100-continue\r\n\r\n".encode())
        r = c.read_response()
        assert r.interim == []            # no "100 Continue" before the answer
        assert r.status == 413
        assert r.json() == {"message": "Request Entity Too Large"}
        assert r.header("connection") == "close"
        rest = c.read_to_close(5)
        assert b"100 Continue" not in rest
    assert len(upstream.received) == before


# -- 4. header limits and malformed requests ----------------------------------------------------

def _big_head(size: int) -> tuple[bytes, bytes]:
    """A GET whose head is ``size`` bytes, as (all but the end, the end)."""
    start = b"GET /mock/a HTTP/1.1\r\nHost: gw.test\r\nX-Big: "
    end = b"\r\n\r\n"
    return start + b"y" * (size - len(start) - len(end)), end


def test_request_head_over_max_header_bytes_is_431_and_closed(gw):
    # the head arrives in pieces (a slow client): the gateway answers before it is complete
    first, end = _big_head(4 * MAX_HEADER)
    with Client(gw.port, timeout=5) as c:
        c.send(first[: MAX_HEADER // 2])
        time.sleep(0.1)
        try:
            c.send(first[MAX_HEADER // 2:])
            time.sleep(0.1)
            c.send(end)
        except OSError:
            pass                          # already rejected and closed
        r = c.read_response()
        assert r.status == 431
        assert r.header("content-type") == "application/json"
        assert r.json() == {"message": "Request Header Fields Too Large"}
        assert c.closed_within(3) is not None


def test_request_head_over_max_header_bytes_in_one_write_is_431(gw):
    head, end = _big_head(2 * MAX_HEADER)
    with Client(gw.port, timeout=5) as c:
        c.send(head + end)
        r = c.read_response()
        assert r.status == 431, (r.status, r.body)
        assert r.json() == {"message": "Request Header Fields Too Large"}
        assert c.closed_within(3) is not None


def test_head_just_under_max_header_bytes_is_served(gw):
    # the control for the limit: the same request, smaller than the limit, is fine
    head, end = _big_head(MAX_HEADER - 200)
    with Client(gw.port, timeout=5) as c:
        c.send(head + end)
        r = c.read_response()
        assert (r.status, r.body) == (200, MOCK_A)


@pytest.mark.parametrize("raw", [
    b"GARBAGE\x01 / HTTP/1.1\r\nHost: gw.test\r\n\r\n",
    b"GET /mock/a HTTX/1.1\r\nHost: gw.test\r\n\r\n",
    b"GET /mock/a HTTP/1.1\r\nHost gw.test\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32,   # a TLS ClientHello
], ids=["method", "version", "header-line", "tls"])
def test_malformed_request_is_400_json_and_closed(gw, raw):
    with Client(gw.port, timeout=5) as c:
        c.send(raw)
        r = c.read_response()
        assert r.status == 400
        assert r.header("content-type") == "application/json"
        assert r.json() == {"message": "Bad Request"}
        assert r.header("connection") == "close"
        assert c.closed_within(3) is not None


def test_malformed_request_after_a_good_one_on_the_same_connection(gw):
    with Client(gw.port, timeout=5) as c:
        c.send(_req("GET", "/mock/a") + b"GARBAGE\x01 / HTTP/1.1\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, MOCK_A)
        r = c.read_response()
        assert r.status == 400 and r.json() == {"message": "Bad Request"}
        assert c.closed_within(3) is not None


# -- 5. raw paths -------------------------------------------------------------------------------

def _status_of(gw, path: str) -> tuple[int, bytes]:
    with Client(gw.port, timeout=5) as c:
        c.send(_req("GET", path))
        r = c.read_response()
        return r.status, r.body


@pytest.mark.parametrize("path, sent", [
    ("/files/a%20b", "/echo/a%20b"),
    ("/files/a%252Fb", "/echo/a%252Fb"),   # a literal "%2F" in the name: encoded once more
    ("/files/caf%C3%A9", "/echo/caf%C3%A9"),
])
def test_raw_path_reaches_the_upstream_with_its_encoding(gw, upstream, path, sent):
    status, body = _status_of(gw, path)
    assert status == 200, body
    assert json.loads(body)["path"] == sent


def test_encoded_slash_is_not_a_separator(gw, upstream):
    """The native front end matches the raw path: %2F is not a path separator (granian's
    decoded path makes it one, README "Routing rules"). The router's contract
    (gwcore/_router_py.py, "Request paths") makes a segment that decodes to "/" BAD_PATH:
    400, and it never reaches an integration."""
    before = len(upstream.received)
    status, body = _status_of(gw, "/files/a%2Fb")
    assert status == 400 and json.loads(body) == {"message": "Bad Request"}
    assert len(upstream.received) == before
    status, body = _status_of(gw, "/files/a/b")     # two segments: not GET /files/{name}
    assert status == 404 and json.loads(body) == {"message": "Not Found"}
    assert len(upstream.received) == before


@pytest.mark.parametrize("path, expected", [
    ("/a/..%2fadmin", 400), ("/a/..%2Fadmin", 400), ("//admin", 404), ("/%2e%2e/admin", 400),
    ("/a/../admin", 400), ("/./admin", 400), ("/admin%00", 400), ("/%61dmin", 200),
])
def test_path_tricks_do_not_reach_admin(gw, path, expected):
    status, body = _status_of(gw, path)
    assert status == expected, (path, status, body)
    if expected != 200:
        assert body != b"admin"


# -- 6. HEAD, 204 and 304 ---------------------------------------------------------------------

def test_head_on_mock_route_has_no_body(gw):
    with Client(gw.port) as c:
        # pipelined behind the HEAD: a body after its head would be read as this answer
        c.send(_req("HEAD", "/mock/a") + _req("GET", "/mock/b"))
        r = c.read_response(head_request=True)
        assert r.status == 200
        assert r.header("x-mock") == "a"
        assert b"HTTP/1.1 ".startswith(c.buf[:9]), c.buf[:50]
        r = c.read_response()
        assert (r.status, r.json()) == (201, MOCK_B)


def test_head_content_length_equals_get_body_length(gw):
    with Client(gw.port) as c:
        c.send(_req("GET", "/mock/a") + _req("HEAD", "/mock/a"))
        get = c.read_response()
        head = c.read_response(head_request=True)
        assert get.header("content-length") == str(len(MOCK_A))
        assert head.header("content-length") == str(len(MOCK_A))


@pytest.mark.parametrize("code", [204, 304])
def test_204_and_304_from_upstream_have_no_body(gw, code):
    with Client(gw.port) as c:
        c.send(_req("GET", f"/up/status/{code}") + _req("GET", "/mock/a"))
        r = c.read_response()
        assert r.status == code
        assert r.header("transfer-encoding") is None
        if code == 204:
            assert r.header("content-length") is None
        # the next response starts right after the head: no body bytes in between
        r = c.read_response()
        assert (r.status, r.body) == (200, MOCK_A)


def test_proxied_response_has_one_date_header(gw):
    with Client(gw.port) as c:
        c.send(_req("GET", "/up/echo/d"))
        r = c.read_response()
        assert r.status == 200
        assert len(r.all("date")) == 1, r.all("date")


# -- 7. streaming ---------------------------------------------------------------------------------

def test_download_without_length_is_chunked_and_complete(gw):
    n = 1_000_000
    with Client(gw.port) as c:
        c.send(_req("GET", f"/up/big?n={n}"))
        r = c.read_response()
        assert r.status == 200
        assert r.chunked and r.header("content-length") is None
        assert len(r.body) == n
        assert hashlib.sha256(r.body).digest() == hashlib.sha256((BLOCK * 16)[:n]).digest()
        # the chunked body ended properly: the connection carries the next request
        c.send(_req("GET", "/mock/a"))
        r = c.read_response()
        assert (r.status, r.body) == (200, MOCK_A)


def test_upstream_dying_mid_chunked_body_cuts_the_client_without_last_chunk(gw):
    with Client(gw.port) as c:
        c.send(_req("GET", "/script/chunked-die"))
        status, head, headers = c.read_head()
        assert status == 200
        assert ("transfer-encoding", "chunked") in headers
        data = c.read_to_close(5)
        body, complete = _dechunk(data)
        assert not complete, "a truncated upstream body was made to look complete"
        assert not data.endswith(b"0\r\n\r\n")
        assert body.startswith(b"hello")          # what the upstream did send came through


def test_upstream_short_of_content_length_cuts_the_client(gw):
    n = 1 << 20                                  # streamed (over the 256 KiB read whole)
    with Client(gw.port) as c:
        c.send(_req("GET", f"/up/truncated?n={n}"))
        status, head, headers = c.read_head()
        assert status == 200
        assert ("content-length", str(2 * n)) in headers
        body = c.read_to_close(5)                # closed, not left hanging
        assert n // 2 <= len(body) < 2 * n


# -- 8. backpressure ------------------------------------------------------------------------------

def test_slow_reader_of_50mb_download_keeps_memory_bounded(gw):
    size = 50 * 1024 * 1024
    base = _rss_tree(gw.proc.pid)
    peak = base
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)   # before connect: the window
    s.settimeout(10)
    s.connect(("127.0.0.1", gw.port))
    try:
        s.sendall(_req("GET", f"/up/big?n={size}", {"Connection": "close"}))
        raw = bytearray()
        deadline = time.monotonic() + 2.0          # slow: 64 KiB per 20 ms
        i = 0
        while time.monotonic() < deadline:
            part = s.recv(65536)
            assert part
            raw += part
            i += 1
            if i % 10 == 0:
                peak = max(peak, _rss_tree(gw.proc.pid))
            time.sleep(0.02)
        slow_bytes = len(raw)
        peak = max(peak, _rss_tree(gw.proc.pid))
        while True:                                 # then fast
            part = s.recv(1 << 20)
            if not part:
                break
            raw += part
            i += 1
            if i % 100 == 0:
                peak = max(peak, _rss_tree(gw.proc.pid))
    finally:
        s.close()
    head, _, rest = bytes(raw).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert slow_bytes < size // 4                   # the slow phase really was slow
    body, complete = _dechunk(rest)
    assert complete
    assert len(body) == size
    assert hashlib.sha256(body).digest() == hashlib.sha256(BLOCK * (size // len(BLOCK))).digest()
    assert peak - base < 16 * 1024 * 1024, f"gateway grew by {(peak - base) >> 20} MiB"


# -- 9. response header injection -----------------------------------------------------------------

def _fn(gw, result: dict) -> bytes:
    body = json.dumps({"return": result}).encode()
    with Client(gw.port) as c:
        c.send(_req("POST", "/fn", body=body) + _req("GET", "/mock/a"))
        r = c.read_response()
        nxt = c.read_response()                     # framing intact: the next answer parses
        assert (nxt.status, nxt.body) == (200, MOCK_A)
        return r


@pytest.mark.parametrize("result", [
    {"statusCode": 200, "headers": {"x-a": "1\r\nset-cookie: evil=1"}, "body": "ok"},
    {"statusCode": 200, "headers": {"x-a": "1\nset-cookie: evil=1"}, "body": "ok"},
    {"statusCode": 200, "headers": {"x-a": "1\rset-cookie: evil=1"}, "body": "ok"},
    {"statusCode": 200, "headers": {"x-a\r\nset-cookie: evil=1\r\nx-b": "1"}, "body": "ok"},
    {"statusCode": 200, "cookies": ["a=1\r\nset-cookie: evil=1"], "body": "ok"},
    {"statusCode": 200, "headers": {"x-a": "1\r\n\r\nHTTP/1.1 200 OK"}, "body": "ok"},
], ids=["crlf-value", "lf-value", "cr-value", "crlf-name", "crlf-cookie", "split-response"])
def test_function_headers_cannot_inject_header_lines(gw, result):
    r = _fn(gw, result)
    assert r.status == 200 and r.body == b"ok"
    lines = r.head.split(b"\r\n")
    for line in lines:
        assert not line.lower().startswith(b"set-cookie: evil"), r.head
    assert not any(line.startswith(b"HTTP/") for line in lines[1:]), r.head
    assert b"\n" not in r.head.replace(b"\r\n", b"")
    assert b"\r" not in r.head.replace(b"\r\n", b"")


def test_function_headers_that_are_fine_come_through(gw):
    # the control for the injection test: a clean header is not dropped
    r = _fn(gw, {"statusCode": 200, "headers": {"x-a": "1", "x-b": "two"},
                 "cookies": ["c=3"], "body": "ok"})
    assert r.header("x-a") == "1" and r.header("x-b") == "two"
    assert r.all("set-cookie") == ["c=3"]


# -- 10. idle and header timeouts -----------------------------------------------------------------

def test_keepalive_and_header_timeouts(config):
    ka = GatewayProcess(config.replace("server:\n", "server:\n  keepalive_timeout: 1s\n"
                                       "  header_timeout: 30s\n", 1), extra_args=NATIVE)
    hd = GatewayProcess(config.replace("server:\n", "server:\n  keepalive_timeout: 30s\n"
                                       "  header_timeout: 1s\n", 1), extra_args=NATIVE)
    with ka, hd:
        socks = {}
        for name, g in (("ka", ka), ("hd", hd)):
            idle = Client(g.port)
            idle.send(_req("GET", "/mock/a"))
            assert idle.read_response().status == 200
            half = Client(g.port)
            half.send(b"GET /mock/a HTTP/1.1\r\nHost: gw.test\r\n")
            socks[name] = (idle, half)
        # a slowloris: a byte of head every 0.3 s (each read must not restart the clock)
        trickle = Client(hd.port)
        stop = threading.Event()

        def drip():
            for b in b"GET /mock/a HTTP/1.1\r\nHost: gw.test\r\nX-Slow: " + b"z" * 100:
                if stop.wait(0.3):
                    return
                try:
                    trickle.send(bytes([b]))
                except OSError:
                    return
        t = threading.Thread(target=drip)
        t.start()
        results = {}

        def watch(key, client):
            results[key] = client.closed_within(4.0)
        watchers = [threading.Thread(target=watch, args=(f"{n}-{k}", cl))
                    for n, pair in socks.items() for k, cl in zip(("idle", "half"), pair)]
        watchers.append(threading.Thread(target=watch, args=("hd-trickle", trickle)))
        for w in watchers:
            w.start()
        for w in watchers:
            w.join(10)
        stop.set()
        t.join(5)
        for pair in socks.values():
            for cl in pair:
                cl.close()
        trickle.close()
    assert results["ka-idle"] is not None and results["ka-idle"] < 3.0, results
    assert results["ka-half"] is None, results           # header_timeout 30s governs
    assert results["hd-half"] is not None and results["hd-half"] < 3.0, results
    assert results["hd-trickle"] is not None and results["hd-trickle"] < 3.0, results
    assert results["hd-idle"] is None, results           # keepalive_timeout 30s governs


# -- 11. the client going away ----------------------------------------------------------------

def test_client_gone_mid_request_does_not_break_the_worker(gw, upstream):
    worker = {p.pid for p in _workers(gw)}
    log_from = len(gw.logs())
    # gone while the upstream is slow
    c = Client(gw.port)
    c.send(_req("GET", "/up/stall?s=0.8"))
    time.sleep(0.2)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()                                      # RST
    # gone in the middle of a streamed upload
    c = Client(gw.port)
    c.send(f"POST /up/upload HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {MAX_BODY}\r\n\r\n".encode())
    c.send(b"u" * 200_000)
    time.sleep(0.2)
    c.close()
    # gone in the middle of a download
    c = Client(gw.port)
    c.send(_req("GET", "/up/big?n=20000000"))
    c.sock.recv(1000)
    c.close()
    time.sleep(1.0)                                # the stalled upstream answers into the void
    with Client(gw.port) as c:
        for path in ("/mock/a", "/up/echo/after"):
            c.send(_req("GET", path))
            r = c.read_response()
            assert r.status == 200, r.body
    assert {p.pid for p in _workers(gw)} == worker, "the worker died and was replaced"
    assert "Traceback" not in gw.logs()[log_from:]


# -- 12. supervisor ---------------------------------------------------------------------------------

def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except (OSError, EOFError, psutil.Error):
            pass
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def _get(port: int, path: str = "/mock/a", timeout: float = 2.0) -> Resp:
    with Client(port, timeout=timeout) as c:
        c.send(_req("GET", path))
        return c.read_response()


def test_killed_worker_is_replaced(config):
    with GatewayProcess(config, workers=2, extra_args=NATIVE) as g:
        _wait(lambda: len(_workers(g)) == 2, 5, "2 workers")
        before = {p.pid for p in _workers(g)}
        victim = sorted(before)[0]
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: not psutil.pid_exists(victim) or psutil.Process(victim).status() == psutil.STATUS_ZOMBIE,
              5, "the worker died")

        def replaced():
            pids = {p.pid for p in _workers(g)}
            return len(pids) == 2 and victim not in pids
        _wait(replaced, 6, "a new worker")
        new = ({p.pid for p in _workers(g)} - before).pop()

        # the new worker serves: fresh connections until one of them lands on it
        def served_by_new():
            for _ in range(20):
                r = _get(g.port, "/pid")
                if r.status == 200 and r.json()["pid"] == new:
                    return True
            return False
        _wait(served_by_new, 8, "the new worker answers")
        for _ in range(20):
            assert _get(g.port).status == 200
        assert g.proc.poll() is None


def test_sigterm_drains_in_flight_request_then_exits_0(config):
    g = GatewayProcess(config, workers=2, extra_args=NATIVE).start()
    try:
        _wait(lambda: len(_workers(g)) == 2, 5, "2 workers")
        idle = Client(g.port)                     # an idle keep-alive connection: closed
        idle.send(_req("GET", "/mock/a"))
        assert idle.read_response().status == 200
        result = {}

        def slow():
            try:
                with Client(g.port) as c:
                    c.send(_req("GET", "/up/stall?s=1.5"))
                    result["r"] = c.read_response()
            except Exception as e:              # noqa: BLE001 - reported below
                result["e"] = e
        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.5)                            # in flight at the upstream
        g.proc.send_signal(signal.SIGTERM)         # the master only: it passes it on
        assert idle.closed_within(3) is not None
        idle.close()
        t.join(10)
        rc = g.proc.wait(15)
    finally:
        g.stop()
    assert "e" not in result, result
    r = result["r"]
    assert r.status == 200 and r.json() == {"stalled": True}
    assert r.header("connection") == "close"       # draining: no keep-alive
    assert rc == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", g.port), timeout=1).close()


def test_fresh_connections_are_spread_over_both_workers(config):
    with GatewayProcess(config, workers=2, extra_args=NATIVE) as g:
        _wait(lambda: len(_workers(g)) == 2, 5, "2 workers")
        workers = {p.pid for p in _workers(g)}
        _wait(lambda: all(any(c.status == psutil.CONN_LISTEN and c.laddr.port == g.port
                              for c in psutil.Process(p).net_connections("tcp")) for p in workers),
              5, "both workers listening")
        seen: dict[int, int] = {}
        for _ in range(200):
            r = _get(g.port, "/pid", timeout=5)
            assert r.status == 200, r.body
            pid = r.json()["pid"]
            seen[pid] = seen.get(pid, 0) + 1
        assert set(seen) == workers, (seen, workers)
        assert min(seen.values()) >= 30, seen


def test_workers_auto_starts_one_worker_per_cpu(config):
    want = len(os.sched_getaffinity(0))
    with GatewayProcess(config, workers="auto", extra_args=NATIVE) as g:
        _wait(lambda: len(_workers(g)) == want, 10, f"{want} workers")
        assert _get(g.port, "/pid", timeout=5).status == 200


# -- 13. granian ------------------------------------------------------------------------------------

def test_granian_frontend_smoke(config):
    with GatewayProcess(config, extra_args=["--frontend", "granian"]) as g:
        _wait(lambda: _get(g.port).status == 200, 10, "granian answers")
        r = _get(g.port)
        assert (r.status, r.body) == (200, MOCK_A)
        r = _get(g.port, "/up/echo/g")
        assert r.status == 200 and r.json()["path"] == "/echo/g"
        # it is granian: RSGI hands over the decoded path, so %2F is a separator (README)
        r = _get(g.port, "/files/a%2Fb")
        assert r.status == 404, r.body
