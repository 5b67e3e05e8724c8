# cython: annotation_typing=False
"""The native front end: an HTTP/1.1 server on uvloop with httptools (llhttp) framing.

Compiled by Cython with the C types declared in http1.pxd (pure-Python mode); uncompiled,
the same file is the pure-Python twin (gwcore/_http1_py.py runs it).

One :class:`Connection` (an asyncio protocol) per client socket; one :class:`Exchange` per
request, which is what the gateway app sees of the connection: the request body as an
async iterator, and ``response_empty`` / ``response_bytes`` / ``response_stream`` to answer
(the same three calls as granian's RSGI protocol object, so ``proxy.app`` serves both).

Requests are handed to ``app.serve_now(exchange, peer)`` once a read has been parsed. It
answers at once (returns None: the exchange is finished there and then, from
``data_received``), or later from a callback (returns True; ``exchange.complete()``, or
``exchange.continue_with(awaitable)``), or returns an awaitable. Only awaitables involve
the connection's task, made the first time one is needed and parked on a future between
requests: a mock, a cache hit or a proxied request answered from the upstream's own
``data_received`` costs no task step at all.

What it does that a user of nginx expects:
- keep-alive and pipelining (requests answered in order; reading pauses while one waits);
- request bodies streamed with flow control (reading pauses past ``BODY_HIGH`` buffered
  bytes), ``Expect: 100-continue`` answered only when the app starts reading the body;
- responses streamed with backpressure (``send_bytes`` waits while the socket's write
  buffer is full) and, when an upstream dies mid-body, cut without a terminating chunk so
  the client sees a truncated response, never a complete-looking one;
- header size limit (431), malformed requests (400), header and keep-alive timeouts;
- the raw request path as sent (percent-encoding intact), unlike RSGI's decoded one;
- graceful drain: stop accepting, close idle connections, finish in-flight requests.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import quote

import httptools

import gwcore

log = logging.getLogger("gwproxy.frontend")

BODY_HIGH = 256 * 1024       # buffered request-body bytes that pause reading from the client
BODY_LOW = 64 * 1024         # ... and resume it
PIPELINE_MAX = 16            # parsed requests waiting behind the one being answered
LINGER_S = 2.0               # how long unread request bodies are drained before closing
LINGER_BYTES = 1 << 20

_monotonic = time.monotonic
# compiled, _now_coarse is a C clock (gwcore/_clock.pxd, cimported in http1.pxd); uncompiled
# (the twin), the same clock read through Python:
globals().setdefault("_now_coarse", time.monotonic)
_HttpParserError = httptools.HttpParserError
_HttpParserUpgrade = httptools.HttpParserUpgrade
#: the strict scanner for a whole body-less request in one read (llhttp for the rest)
_h1scan = gwcore.load("h1scan")
_scan_request = _h1scan.scan_request     # (a module global: tests swap it for a spy)
# (compiled, scan_lane is a C call: cimported in http1.pxd; uncompiled, the module's)
globals().setdefault("_scan_lane", _h1scan.scan_lane)
_UNLIMITED = 1 << 62
_fields = _h1scan.fields
_answer = _h1scan.answer


def _status_lines() -> dict[int, bytes]:
    out = {}
    for s in HTTPStatus:
        out[s.value] = f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode()
    return out


STATUS_LINES = _status_lines()
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_FRAMING = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive"))
_FRAMING_NAMES = tuple(sorted(_FRAMING))
_URL_SAFE = "".join(chr(c) for c in range(0x21, 0x7F))


def status_line(status: int) -> bytes:
    line = STATUS_LINES.get(status)
    if line is None:
        line = f"HTTP/1.1 {status} Unknown\r\n".encode()
    return line


class _Clock:
    """The Date header, formatted once a second (not per response)."""

    __slots__ = ("date", "_sec")

    def __init__(self):
        self._sec = 0
        self.date = b""
        self.tick()

    def tick(self) -> bytes:
        now = time.time()
        sec = int(now)
        if sec != self._sec:
            self._sec = sec
            self.date = ("date: " + formatdate(now, usegmt=True) + "\r\n").encode()
        return self.date


CLOCK = _Clock()


def encode_head(status: int, headers: list, framing: str, keep_alive: bool) -> bytes:
    """Status line + headers (framing headers from the app are dropped; ``framing`` is ours).

    Header names and values must not carry CR or LF: a header that does is left out (a
    function returning ``"a\\r\\nSet-Cookie: x"`` must not add a header). A Date from the
    app (an upstream's) is kept instead of ours."""
    r = _fields(headers, _FRAMING_NAMES, "date") if type(headers) is list else None
    if r is not None:       # the common case, written in one pass (gwcore.h1scan.fields)
        if not keep_alive:
            framing += "connection: close\r\n"
        return b"".join((status_line(status), b"" if r[1] else CLOCK.date, r[0],
                         framing.encode("latin-1"), b"\r\n"))
    parts = []
    date = CLOCK.date
    for k, v in headers:
        n = len(k)
        if n == 4 or n == 10 or n == 14 or n == 17:     # date and the framing names' lengths
            lk = str(k).lower()
            if lk in _FRAMING:
                continue
            if lk == "date":
                date = b""
        parts.append(f"{k}: {v}\r\n")
    count = len(parts)
    block = "".join(parts)
    # each part ends in its own CRLF: any other CR or LF came from a name or a value.
    # Counted at C speed over the block instead of searching every string.
    if block.count("\n") != count or block.count("\r") != count:
        return encode_head(status, _without_crlf(headers), framing, keep_alive)
    if not keep_alive:
        framing += "connection: close\r\n"
    block = block + framing + "\r\n"
    try:
        head = block.encode("latin-1")
    except UnicodeEncodeError:
        head = block.encode("utf-8")
    return status_line(status) + date + head


def _without_crlf(headers) -> list:
    return [(k, v) for k, v in headers if not any(c in str(k) or c in str(v) for c in "\r\n")]


_JSON_CT = [("content-type", "application/json")]


def _message_body(message: str) -> bytes:
    """API Gateway's ``{"message": ...}`` body, for the front end's own answers."""
    return b'{"message":"%s"}' % message.encode()


class ClientGone(ConnectionError):
    """The client closed the connection before the exchange finished."""


class LaneBase:
    """What the front end knows of a forwarding lane (gwcore.lane.Lane is one): the
    client's method, raw path and Host it was found for, and :meth:`forward`. A base here so
    that compiled, reading these and calling forward are C accesses, not Python lookups."""

    __slots__ = ("method", "client_path", "client_host")

    def __init__(self, method: str, client_path: str, client_host: str):
        self.method = method
        self.client_path = client_path
        self.client_host = client_host

    def forward(self, ex: "Exchange", peer: str):
        """The serve_now contract for the scanned request ``ex``: True, an awaitable, or
        False (nothing done: the app's path takes it)."""
        return False


class Exchange:
    """One request on a connection: body in, response out."""

    __slots__ = ("conn", "method", "path", "query", "headers", "http_version", "host",
                 "keep_alive", "expect_continue", "_chunks", "_buffered", "_complete",
                 "_waiter", "started", "head", "_mode", "_sent", "_declared", "done", "reject",
                 "raw", "lane", "rid", "start_ns")

    def __init__(self, conn: "Connection"):
        self.conn = conn
        self.headers: list = []
        self.host = ""
        self.expect_continue = False
        self._chunks: deque | None = None     # body chunks, made when the first arrives
        self._buffered = 0
        self._complete = False
        self._waiter: asyncio.Future | None = None
        self.started = False      # response head written
        self.head = False         # HEAD request
        self._mode = 0            # 0 none, 1 length, 2 chunked, 3 close-delimited
        self._sent = 0
        self._declared = -1
        self.done = False
        self.reject = 0           # a status the head earned before the app sees it (431)
        self.raw = None           # a lane's request: the head, until unpack() reads it
        self.lane = None          # the forwarding lane (gwcore.lane) found for it
        self.rid = ""             # ... and the request id and start (perf ns) it gave it
        self.start_ns = 0

    def unpack(self) -> None:
        """Fill ``query`` and ``headers`` of a request a lane took (only its method, path
        and Host were read then) from its raw head: what the scanner gives for it."""
        raw = self.raw
        if raw is not None:
            self.raw = None
            r = _scan_request(raw, _UNLIMITED)
            self.query = r[2]
            self.headers = r[3]

    # -- request body (filled by the connection) ---------------------------------------
    def _feed(self, data: bytes) -> None:
        if self._chunks is None:
            self._chunks = deque()
        self._chunks.append(data)
        self._buffered += len(data)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)
        if self._buffered > BODY_HIGH:
            self.conn._pause_body()

    def _finish_body(self) -> None:
        self._complete = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _fail(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_exception(ClientGone("client closed the connection"))

    @property
    def body_complete(self) -> bool:
        return self._complete

    def __aiter__(self):
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._chunks:
                data = self._chunks.popleft()
                self._buffered -= len(data)
                if self._buffered < BODY_LOW:
                    self.conn._resume_body()
                return data
            if self._complete:
                raise StopAsyncIteration
            if self.conn.closed:
                raise ClientGone("client closed the connection")
            if self.expect_continue:
                self.expect_continue = False
                if not self.started:
                    self.conn.transport.write(_CONTINUE)
            self.conn._resume_body()
            self._waiter = self.conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    # -- response ------------------------------------------------------------------------
    def _bodyless(self, status: int) -> bool:
        return self.head or status == 204 or status == 304 or status < 200

    def response_empty(self, status: int, headers: list) -> None:
        if self.started:
            return
        self.started = True
        framing = ""
        if not self._bodyless(status):
            framing = "content-length: 0\r\n"
        elif self.head or status == 304:
            # a HEAD / 304 answer may say how long the body would be
            for k, v in headers:
                if k == "content-length" or k.lower() == "content-length":
                    framing = f"content-length: {v}\r\n"
                    break
        self.conn._write(encode_head(status, headers, framing, self.conn._keep(self)))

    def response_bytes(self, status: int, headers: list, body: bytes) -> None:
        if self.started:
            return
        if self._bodyless(status):
            if self.head:
                self.started = True
                self.conn._write(encode_head(status, headers, f"content-length: {len(body)}\r\n",
                                             self.conn._keep(self)))
                return
            self.response_empty(status, headers)
            return
        self.started = True
        head = encode_head(status, headers, f"content-length: {len(body)}\r\n", self.conn._keep(self))
        self.conn._write(head + body if len(body) < 65536 else head)
        if len(body) >= 65536:
            self.conn._write(body)

    def response_lines(self, status: int, lines: tuple, has_date: bool, body: bytes) -> None:
        """:meth:`response_bytes` for headers already written as lines: ``lines`` is bytes
        pieces that together are ``name: value`` CRLF lines (latin-1, no framing names;
        ``has_date``: a Date is among them). The same bytes on the wire. For answers with a
        body (not HEAD, 1xx, 204, 304)."""
        if self.started:
            return
        if self._bodyless(status):
            raise ValueError("response_lines() is for answers with a body")
        self.started = True
        keep = self.conn._keep(self)
        head = (status_line(status), b"" if has_date else CLOCK.date) + lines
        if len(body) < 65536:
            self.conn._write(_answer(head, body, not keep))
            return
        self.conn._write(b"".join(head + (b"content-length: %d\r\n" % len(body),
                                          b"\r\n" if keep else b"connection: close\r\n\r\n")))
        self.conn._write(body)

    def response_stream(self, status: int, headers: list) -> "Exchange":
        if self.started:
            raise RuntimeError("response already started")
        self.started = True
        if self._bodyless(status):
            self._mode = 0
            return self._head_only(status, headers)
        declared = None
        for k, v in headers:
            if k == "content-length" or (k[:1] in "cC" and k.lower() == "content-length"):
                declared = v
                break
        if declared is not None and declared.isdigit():
            self._mode = 1
            self._declared = int(declared)
            framing = f"content-length: {declared}\r\n"
        elif self.http_version == "1.1":
            self._mode = 2
            framing = "transfer-encoding: chunked\r\n"
        else:
            self._mode = 3
            self.keep_alive = False
            framing = ""
        self.conn._write(encode_head(status, headers, framing, self.conn._keep(self)))
        return self

    def _head_only(self, status, headers):
        self.conn._write(encode_head(status, headers, "", self.conn._keep(self)))
        return self

    async def send_bytes(self, data: bytes) -> None:
        conn = self.conn
        if conn.closed:
            raise ClientGone("client closed the connection")
        if not data or self._mode == 0:
            return
        if self._mode == 2:
            conn._write(b"%x\r\n%b\r\n" % (len(data), data) if len(data) < 16384
                        else b"%x\r\n" % len(data))
            if len(data) >= 16384:
                conn._write(data)
                conn._write(b"\r\n")
        else:
            if self._mode == 1:
                self._sent += len(data)
                if self._sent > self._declared:
                    raise RuntimeError("response body longer than its Content-Length")
            conn._write(data)
        if conn.write_paused:
            await conn._drain()

    async def send_str(self, data: str) -> None:
        await self.send_bytes(data.encode())

    # -- answers that come later (after the app's serve_now() returned True) --------------
    def complete(self) -> None:
        """The app answered this exchange from a callback (an upstream's, a timer's): finish
        it as if its coroutine had returned."""
        self.conn._complete(self)

    def continue_with(self, aw) -> None:
        """The app's answer needs awaiting after all: the connection's task awaits ``aw``
        and then finishes the exchange."""
        self.conn._await(self, aw)

    def _end(self) -> bool:
        """The app returned: finish the response. False when the body is short (abort)."""
        if self._mode == 2:
            self.conn._write(b"0\r\n\r\n")
        elif self._mode == 1 and self._sent != self._declared:
            return False
        elif self._mode == 3:
            return False    # close-delimited: closing ends it
        return True


class Connection:
    """One client connection."""

    __slots__ = ("server", "app", "loop", "transport", "parser", "peer", "closed",
                 "current", "parsing", "queue", "url", "hname", "header_bytes",
                 "read_paused", "write_paused", "_drain_waiter", "idle_since",
                 "in_headers", "task", "lingering", "_discard", "max_header", "head_bytes",
                 "pending_reject", "_next", "_handoff", "_pumping", "eof", "lanes", "_twrite")

    def __init__(self, server: "FrontendServer"):
        self.server = server
        self.app = server.app
        self.loop = server.loop
        self.transport = None
        self._twrite = None      # transport.write, looked up once
        self.parser = httptools.HttpRequestParser(self)
        self.peer = ""
        self.closed = False
        self.current: Exchange | None = None    # being answered
        self.parsing: Exchange | None = None    # being parsed (may be a later, pipelined one)
        self.queue: deque = deque()             # parsed, waiting for `current` to finish
        self.url = b""
        self.header_bytes = 0
        self.read_paused = False
        self.write_paused = False
        self._drain_waiter: asyncio.Future | None = None
        self.idle_since = _monotonic()
        self.in_headers = True
        self.task = None
        self.lingering = False
        self._discard = 0
        self.max_header = server.max_header_bytes
        self.head_bytes = 0
        self.pending_reject: tuple | None = None   # (status, message) after earlier answers
        self._next: asyncio.Future | None = None   # the task waits here for the next request
        self._handoff: Exchange | None = None      # next request, started from inside the task
        self._pumping = False    # _pump() is on the stack
        self.eof = False         # the client half-closed: close once the parsed requests are answered
        # the app's forwarding lanes (gwcore.lane), looked up for scanned requests
        lanes = getattr(self.app, "lanes", None)
        self.lanes = lanes if type(lanes) is dict else None

    # -- asyncio protocol ----------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        self._twrite = transport.write
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer = peer[0] if isinstance(peer, tuple) else str(peer)
        self.server.connections.add(self)

    def connection_lost(self, exc):
        self.closed = True
        self.server.connections.discard(self)
        w = self._next
        if w is not None:
            self._next = None
            if not w.done():
                w.set_result(None)      # the connection's task ends
        for ex in (self.current, self.parsing, *self.queue):
            if ex is not None:
                ex._fail()
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_exception(ClientGone("client closed the connection"))

    def pause_writing(self):
        self.write_paused = True

    def resume_writing(self):
        self.write_paused = False
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _drain(self):
        if self.closed:
            raise ClientGone("client closed the connection")
        self._drain_waiter = self.loop.create_future()
        try:
            await self._drain_waiter
        finally:
            self._drain_waiter = None

    def data_received(self, data: bytes):
        if self.lingering:
            self._discard += len(data)
            if self._discard > LINGER_BYTES:
                self.transport.close()
            return
        if self.parsing is None and self.current is None and not self.queue:
            # between messages, nothing pending: the commonest read (one whole request
            # head, no body) is taken in one strict pass, anything else goes to llhttp,
            # which is then at the same message boundary as if it had parsed this one
            lanes = self.lanes
            if lanes:
                r = _scan_lane(data, self.max_header, lanes)
            else:
                r = _scan_request(data, self.max_header)
            if r is not None:
                if len(r) == 2:
                    self._laned(r[0], r[1], data)
                else:
                    self._scanned(r)
                return
        if self.in_headers:
            self.header_bytes += len(data)   # reset when a head completes
        try:
            self.parser.feed_data(data)
        except _HttpParserUpgrade:
            # Upgrade (websocket, h2c) and CONNECT are not served: the request is answered
            # as plain HTTP/1.1, like nginx without an upgrade config, and the connection
            # closes after it (what follows on the wire is not HTTP/1.1 any more)
            self.lingering = True
            for ex in (self.current, *self.queue):
                if ex is not None:
                    ex.keep_alive = False
        except _HttpParserError:
            self._reject(400, "Bad Request")
        else:
            if self.in_headers and self.header_bytes > self.max_header and self.parsing is not None:
                self._reject(431, "Request Header Fields Too Large")
        # requests are started once the whole read was parsed (a GET's end is then known,
        # and its answer may be written right here, before returning to the loop)
        if self.current is None and self.queue and not self.closed:
            self._pump()

    def _whole(self, method: str, path: str, host: str, keep: bool) -> Exchange:
        """The Exchange of a whole body-less HTTP/1.1 request the scanner took."""
        ex = Exchange(self)
        self.header_bytes = 0     # (idle_since: set again when it is answered)
        ex.method = method
        ex.path = path
        ex.host = host
        ex.keep_alive = keep
        ex.http_version = "1.1"
        ex.head = method == "HEAD"
        ex._complete = True
        return ex

    def _scanned(self, r: tuple):
        """A request taken by the scanner: the Exchange llhttp's callbacks would have made
        of it, started at once (nothing is queued or current: no round through _pump)."""
        ex = self._whole(r[0], r[1], r[4], r[5])
        ex.query = r[2]
        ex.headers = r[3]
        self._start(ex)

    def _laned(self, lane: LaneBase, keep: bool, data: bytes):
        """A request the scanner took and found a forwarding lane for: an Exchange that
        knows its method, path and Host (the lane's) and keeps the raw head for the rest."""
        ex = self._whole(lane.method, lane.client_path, lane.client_host, keep)
        ex.query = ""
        ex.raw = data
        ex.lane = lane
        self._start(ex)

    def eof_received(self):
        # a half-closed client may still be waiting for its answer (and those pipelined
        # before it): keep the transport open for them, and close once they are written
        if self.current is None and not self.queue:
            return False
        self.eof = True
        return True

    # -- httptools callbacks -------------------------------------------------------------
    def on_message_begin(self):
        self.in_headers = True
        self.head_bytes = 0
        self.url = b""
        ex = Exchange(self)
        self.parsing = ex
        self.idle_since = _monotonic()

    def on_url(self, url: bytes):
        self.url += url
        self.head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes):
        ex = self.parsing
        self.head_bytes += len(name) + len(value) + 4
        n = name.decode("latin-1").lower()
        v = value.decode("latin-1")
        ex.headers.append((n, v))
        if n == "host":
            if not ex.host:
                ex.host = v
        elif n == "expect" and v.lower() == "100-continue":
            ex.expect_continue = True

    def on_headers_complete(self):
        ex = self.parsing
        p = self.parser
        self.in_headers = False
        self.header_bytes = 0
        if self.head_bytes > self.max_header:
            ex.reject = 431
        ex.method = p.get_method().decode("latin-1")
        ex.http_version = p.get_http_version()
        ex.keep_alive = p.should_keep_alive()
        ex.head = ex.method == "HEAD"
        url = self.url
        if url[:1] == b"/":
            path, _, query = url.partition(b"?")
            if b"#" in query:
                query = query.partition(b"#")[0]
        else:
            try:
                u = httptools.parse_url(url)
            except _HttpParserError:
                u = None
            if u is None or not u.path:
                ex.path = None
                path, query = b"", b""
            else:
                path, query = u.path, u.query or b""
                if u.host and not ex.host:
                    ex.host = u.host.decode("latin-1")
        if path.isascii():
            ex.path = path.decode("ascii")
        else:
            ex.path = quote(path, safe=_URL_SAFE)
        ex.query = query.decode("latin-1")
        self.queue.append(ex)      # started from data_received, after the parser returns
        if len(self.queue) >= PIPELINE_MAX:
            self._pause_reading()

    def on_body(self, body: bytes):
        self.parsing._feed(body)

    def on_message_complete(self):
        ex = self.parsing
        self.parsing = None
        self.in_headers = True
        if ex is not None:
            ex._finish_body()

    # -- flow control --------------------------------------------------------------------
    def _pause_reading(self):
        if not self.read_paused and not self.closed:
            self.read_paused = True
            self.transport.pause_reading()

    def _resume_reading(self):
        if self.read_paused and not self.closed:
            self.read_paused = False
            self.transport.resume_reading()

    def _pause_body(self):
        self._pause_reading()

    def _resume_body(self):
        if len(self.queue) < PIPELINE_MAX:
            self._resume_reading()

    def _write(self, data: bytes):
        if not self.closed:
            self._twrite(data)

    def _keep(self, ex: Exchange) -> bool:
        return ex.keep_alive and ex._complete and not self.server.draining

    # -- requests ------------------------------------------------------------------------
    def _start(self, ex: Exchange):
        self.current = ex
        if ex.path is None or ex.reject:
            if ex.reject == 431:
                self._answer_plain(ex, 431, "Request Header Fields Too Large")
            else:
                self._answer_plain(ex, 400, "Bad Request")
            self._finished(ex, True)
            return
        if self.task is not None and self._next is None:
            # the connection's task is running (not parked on _next): it takes this one next
            self._handoff = ex
            return
        aw = self._dispatch(ex)
        if aw is not None:
            self._await(ex, aw)

    def _dispatch(self, ex: Exchange):
        """Hand ``ex`` to the app: to the forwarding lane the app keeps for its Host, method
        and path (scanned requests), or to its ``serve_now`` (also when the lane declines).
        Either answers at once (None: finished here), or later from a callback (True: it
        calls ``ex.complete()``), or returns an awaitable, returned from here for the
        connection's task to await."""
        try:
            r = False
            lane = ex.lane
            if lane is not None:
                r = lane.forward(ex, self.peer)
            if r is False:
                r = self.app.serve_now(ex, self.peer)
        except Exception:
            log.exception("request failed")
            r = None
        if r is None:
            self._complete(ex)
            return None
        if r is True:
            return None
        return r

    def _complete(self, ex: Exchange):
        if self.current is not ex:
            return              # finished already (a second complete() is ignored)
        ok = True
        if not ex.started:
            self._answer_plain(ex, 500, "Internal server error")
        elif not ex._end():
            ok = False
        self._finished(ex, ok)

    def _await(self, ex: Exchange, aw):
        """The connection's task awaits ``aw`` for ``ex`` (the current exchange)."""
        w = self._next
        if w is not None:                   # parked: wake it with the work
            self._next = None
            w.set_result(aw)
        elif self.task is None:
            self.task = self.loop.create_task(self._serve(ex, aw))
        else:                               # pragma: no cover - one exchange at a time
            raise RuntimeError("the connection's task is busy")

    async def _serve(self, ex: Exchange, aw):
        """The connection's task, for answers that must be awaited: awaits them one after
        another and parks on a future in between (one task per connection at most, made
        the first time one is needed; answers given at once never wake it)."""
        try:
            while True:
                try:
                    await aw
                except BaseException as e:
                    ok = False
                    if not ex.started and not self.closed and not isinstance(e, asyncio.CancelledError):
                        self._answer_plain(ex, 500, "Internal server error")
                        ok = True
                    if not isinstance(e, (Exception, asyncio.CancelledError)):
                        raise
                    self._finished(ex, ok)
                else:
                    self._complete(ex)
                aw = None
                while aw is None:               # pipelined requests started meanwhile
                    ex = self._handoff
                    if ex is None:
                        break
                    self._handoff = None
                    aw = self._dispatch(ex)     # may finish at once and hand off another
                if aw is not None:
                    continue
                if self.closed:
                    break
                w = self._next = self.loop.create_future()
                aw = await w
                if aw is None:                  # the connection closed
                    break
                ex = self.current
        finally:
            self.task = None
            self._next = None
            self._handoff = None

    def _answer_plain(self, ex: Exchange, status: int, message: str):
        ex.keep_alive = False
        ex.response_bytes(status, _JSON_CT, _message_body(message))

    def _finished(self, ex: Exchange, ok: bool):
        self.current = None
        if self.closed:
            return
        if not ok:
            # the response was cut short: closing is the only signal left
            self.transport.abort() if ex._mode in (1, 2) else self.transport.close()
            return
        if not self._keep(ex):
            if not ex._complete and not self.server.draining:
                self._linger()
            else:
                self.transport.close()
            return
        self.idle_since = _now_coarse()    # (idle seconds: a tick's precision is plenty)
        self._pump()

    def _pump(self):
        """Start the queued requests, one after another while they are answered at once
        (a loop, not recursion: a read may hold hundreds of pipelined requests); then send
        a pending reject, or read on."""
        if self._pumping:
            return              # the _pump() further up the stack goes on
        if not self.read_paused and not self.queue and self.pending_reject is None and not self.eof:
            return              # nothing waits and reading is on (the commonest end)
        self._pumping = True
        try:
            while self.current is None and not self.closed and not self.transport.is_closing():
                if self.queue:
                    nxt = self.queue.popleft()
                    self._resume_body()
                    self._start(nxt)
                elif self.pending_reject is not None:
                    status, message = self.pending_reject
                    self._send_reject(status, message)
                elif self.eof:
                    self.transport.close()    # nothing more can come
                    break
                else:
                    self._resume_reading()
                    break
        finally:
            self._pumping = False

    def _linger(self):
        """Answered before the body was read: half-close, drain the rest for a while, close.

        Closing at once could reset the connection before the client reads the answer (a
        413 to a client still uploading would be lost)."""
        self.lingering = True
        self._resume_reading()
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except OSError:
            pass
        self.loop.call_later(LINGER_S, self.transport.close)

    def _reject(self, status: int, message: str):
        """Malformed or oversized request head: answer it after any earlier requests of the
        connection were answered, then close."""
        if self.closed:
            return
        self.lingering = True          # nothing more is parsed from this connection
        if self.current is not None or self.queue:
            self.pending_reject = (status, message)
            return
        self._send_reject(status, message)

    def _send_reject(self, status: int, message: str):
        body = _message_body(message)
        self.transport.write(encode_head(status, _JSON_CT, f"content-length: {len(body)}\r\n", False) + body)
        self.transport.close()
        self.closed = True
        self.server.connections.discard(self)

    def close_if_idle(self) -> bool:
        if self.current is None and not self.queue and (self.parsing is None):
            self.transport.close()
            return True
        return False


class FrontendServer:
    """The listener of one worker and its connections."""

    def __init__(self, app, loop, *, max_header_bytes: int = 16384,
                 keepalive_timeout: float = 75.0, header_timeout: float = 60.0):
        self.app = app
        self.loop = loop
        self.max_header_bytes = max_header_bytes
        self.keepalive_timeout = keepalive_timeout
        self.header_timeout = header_timeout
        self.connections: set[Connection] = set()
        self.draining = False
        self.server = None
        self._sweeper = None

    async def start(self, sock) -> None:
        self.server = await self.loop.create_server(lambda: Connection(self), sock=sock, backlog=2048)
        self._sweep()

    def _sweep(self):
        """Once a second: the Date header, idle keep-alive and slow header timeouts."""
        CLOCK.tick()
        now = _monotonic()
        for c in list(self.connections):
            if c.current is None and not c.queue:
                limit = self.header_timeout if c.parsing is not None else self.keepalive_timeout
                if now - c.idle_since > limit:
                    c.transport.close()
        self._sweeper = self.loop.call_later(1.0, self._sweep)

    async def drain(self, timeout: float) -> None:
        """Stop accepting; close idle connections; wait up to ``timeout`` for the rest."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        deadline = _monotonic() + timeout
        while self.connections and _monotonic() < deadline:
            for c in list(self.connections):
                c.close_if_idle()
            if not self.connections:
                break
            await asyncio.sleep(0.05)
        for c in list(self.connections):
            c.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
