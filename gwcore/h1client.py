# cython: annotation_typing=False
"""The upstream HTTP/1.1 client: keep-alive connection pools driving httptools' C parser.

Compiled by Cython with the C types declared in h1client.pxd (pure-Python mode, like
gwcore/http1.py); uncompiled, the same file is the pure-Python twin (gwcore/_h1client_py.py
runs it). proxy.upstream re-exports it.

A :class:`Connection` carries one request at a time (no pipelining). The request
coroutine (:meth:`Connection.send`) writes pre-encoded bytes and waits for the
response head; the protocol callbacks fill an :class:`UpstreamResponse`, whose body
is buffered only up to ``HIGH_WATER`` bytes before the transport stops reading.
A request without a body may instead be started in callback mode
(:meth:`UpstreamPool.start`): written at once, and a callback told from ``data_received``
when the response head (and, for a small response, usually the whole body) is in, with
no coroutine or future involved: the gateway's fast path for plain proxying.

Waiting is done on bare futures that are only ever given ``None``; what happened is
read from the connection's state afterwards. Timers are ``loop.call_at`` handles,
cancelled on the fast path, never ``asyncio.wait_for``.

Pools: load balancing and health checks sit above this: they pick a target and call its
pool's :meth:`UpstreamPool.request`. A pool only knows its own target.

Slots: at most ``max_connections`` connections exist (connecting + idle + in use).
A request that finds neither an idle connection nor a free slot waits in FIFO order,
bounded by its own timeout. A released connection is handed straight to the oldest
waiter; a closed one gives its slot to the oldest waiter, who then connects.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable

from httptools import HttpParserCallbackError, HttpParserError, HttpParserUpgrade, HttpResponseParser

import gwcore
from gwcore.errors import (BodyLengthError, ConnectError, ProtocolError, ResetError, ResponseTooLarge,
                           UpstreamError, UpstreamTimeout)

__all__ = ["Connection", "UpstreamResponse", "HIGH_WATER", "PoolSettings", "UpstreamPool", "encode_head",
           "body_framing",
           "HOP_BY_HOP", "REQUEST_DROP", "connection_tokens", "strip_response",
           "outgoing_headers"]


# Response body buffered per connection before pause_reading(); reading resumes as
# soon as the consumer takes the buffer.
HIGH_WATER = 256 * 1024
# Bodies up to this size are concatenated with the head into one write().
_COALESCE_MAX = 64 * 1024

_CONNECTION = b"connection"
#: hop-by-hop names (RFC 9110 7.6.1) and Content-Length, as the parser sees them, and their lengths
_HOP_BYTES = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"proxy-authenticate",
                        b"proxy-authorization", b"content-length"))
_HOP_LENGTHS = frozenset(len(n) for n in _HOP_BYTES)
_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
_CHUNK_END = b"\r\n"
_LAST_CHUNK = b"0\r\n\r\n"

#: the strict scanner for a whole Content-Length response in one read (llhttp for the rest)
_h1scan = gwcore.load("h1scan")
# compiled, _now and _now_coarse are C clocks (gwcore/_clock.pxd, cimported in h1client.pxd);
# uncompiled (the twin), the same clock read through Python:
globals().setdefault("_now", time.monotonic)
globals().setdefault("_now_coarse", time.monotonic)
# (module globals, not cimported: off the relayed path, and tests swap them for spies)
_scan_response = _h1scan.scan_response
_scan_response_block = _h1scan.scan_response_block
_fields = _h1scan.fields

# Connection states (ints: compared on the hot path). DETACHED: holds a pool slot but
# is neither idle nor serving a request (connecting, or being closed by the pool).
DETACHED, IDLE, ACTIVE, CLOSED = 0, 1, 2, 3


class _Stop(Exception):
    """Raised from a parser callback to stop parsing; the reason is on the connection."""


class _Body:
    """Body state shared by a connection and its response (the connection never holds
    the :class:`UpstreamResponse` itself once the head is in, so a response the caller
    drops is freed at once and its ``__del__`` can close a half-read connection)."""

    __slots__ = ("_conn", "_chunks", "_buffered", "_done", "_exc", "_waiter", "_read_timeout", "_loop")

    def __init__(self, conn: "Connection", loop: asyncio.AbstractEventLoop, read_timeout: float) -> None:
        self._conn: Connection | None = conn
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._read_timeout = read_timeout
        self._loop = loop

    def _take(self) -> bytes:
        chunks = self._chunks
        if len(chunks) == 1:
            data = chunks.popleft()
        else:
            data = b"".join(chunks)
            chunks.clear()
        self._buffered = 0
        conn = self._conn
        if conn is not None and conn._reading_paused:
            conn._resume_reading()
        return data

    async def _wait(self) -> None:
        fut = self._loop.create_future()
        self._waiter = fut
        timer = self._loop.call_later(self._read_timeout, self._on_read_timeout)
        try:
            await fut
        finally:
            timer.cancel()
            self._waiter = None

    def _on_read_timeout(self) -> None:
        conn = self._conn
        if conn is not None and conn._body is self:
            conn._fail(UpstreamTimeout("timed out reading the response body", kind="read_timeout"))

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self) -> "_Body":
        return self

    async def __anext__(self) -> bytes:
        while True:
            if self._chunks:
                return self._take()
            if self._exc is not None:
                raise self._exc
            if self._done:
                raise StopAsyncIteration
            await self._wait()

    async def read(self, limit: int | None) -> bytes:
        parts: list[bytes] = []
        size = 0
        while True:
            if self._chunks:
                data = self._take()
                size += len(data)
                if limit is not None and size > limit:
                    self._abort()
                    raise ResponseTooLarge(f"body exceeds {limit} bytes")
                parts.append(data)
                continue
            if self._exc is not None:
                raise self._exc
            if self._done:
                break
            await self._wait()
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _abort(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn._close()
        if not self._done and self._exc is None:
            self._exc = ResetError("response closed before the body was read", kind="closed")
        self._chunks.clear()
        self._buffered = 0


#: the headers of a response whose head has not started (never appended to: on_header only
#: runs after on_message_begin gave the response lists of its own)
_NO_HEADERS: list = []


class UpstreamResponse:
    """A response head plus a lazily streamed body.

    The body is consumed either with ``await read()`` or ``async for chunk in resp``.
    When the body has been fully received the connection has already gone back to
    the pool (if keep-alive allows); ``aclose()`` is then a no-op. Otherwise
    ``aclose()`` closes the connection; so does dropping a half-read response.
    """

    __slots__ = ("status", "headers", "http_version", "content_length", "chunked", "keep_alive", "_has_body", "_b",
                 "_fwd", "_named", "block", "block_date")

    def __init__(self, body: _Body) -> None:
        self.status = 0
        # both lists are made when the head starts (on_message_begin, or the scanner's);
        # no caller is handed a response before its head
        self.headers: list[tuple[str, str]] = _NO_HEADERS
        self._fwd: list = _NO_HEADERS  # the headers minus hop-by-hop ones, built while parsing
        self._named = None            # lower-case names listed in Connection (other than close/keep-alive)
        # block mode (UpstreamPool.start_head(block=True)) when the scanner took the whole
        # response: the forwarded headers already written as lines (``headers`` and
        # ``forward_headers()`` are then empty), and whether a Date is among them
        self.block: bytes | None = None
        self.block_date = False
        self.http_version = "1.1"
        self.content_length: int | None = None
        self.chunked = False
        self.keep_alive = False
        self._has_body = True
        self._b = body

    def __repr__(self) -> str:
        return f"<UpstreamResponse {self.status} HTTP/{self.http_version} done={self._b._done}>"

    def has_body(self) -> bool:
        """False for responses that cannot have a body (HEAD, 1xx, 204, 304)."""
        return self._has_body

    @property
    def complete(self) -> bool:
        """The whole body has been received (it may still be buffered here)."""
        return self._b._done

    def __aiter__(self) -> _Body:
        """Body chunks as they arrive; at most ~HIGH_WATER + one socket read buffered."""
        return self._b

    def __anext__(self) -> Awaitable[bytes]:
        return self._b.__anext__()

    def forward_headers(self) -> list:
        """The headers to pass on to the client: minus hop-by-hop ones, those named in
        Connection, and Content-Length (the same as ``strip_response(self.headers)``)."""
        named = self._named
        if named is None:
            fwd = self._fwd
            return [] if fwd is _NO_HEADERS else fwd
        return [(k, v) for k, v in self._fwd if k.lower() not in named]

    def body_now(self):
        """The whole body when it has already arrived in full (the connection is then back
        in the pool), without awaiting; None when it has not (use :meth:`read`)."""
        b = self._b
        if b._done and b._exc is None:
            if not b._chunks:
                return b""
            return b._take()
        return None

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body. More than ``limit`` bytes -> ResponseTooLarge (connection closed)."""
        b = self._b
        if limit is not None and self.content_length is not None and self.content_length > limit:
            b._abort()
            raise ResponseTooLarge(f"content-length {self.content_length} exceeds {limit}")
        data = self.body_now()   # common case: the whole (small) body came with the head
        if data is not None:
            if limit is not None and len(data) > limit:
                raise ResponseTooLarge(f"body exceeds {limit} bytes")
            return data
        return await b.read(limit)

    async def aclose(self) -> None:
        """Release the connection: back to the pool when the body was complete, else closed."""
        b = self._b
        if not b._done:
            b._abort()

    def __del__(self) -> None:
        # An abandoned, half-read response must not pin a pool slot.
        b = self._b
        if b._conn is not None and not b._done:
            try:
                b._abort()
            except Exception:  # pragma: no cover - interpreter shutdown
                pass


class Connection:
    """One connection to one target. Owned by an :class:`UpstreamPool`."""

    __slots__ = (
        "pool",
        "loop",
        "transport",
        "_twrite",
        "parser",
        "state",
        "requests",
        "idle_since",
        "_slot",
        "_exc",
        "_resp",
        "_body",
        "_head_waiter",
        "_drain_waiter",
        "_write_paused",
        "_reading_paused",
        "_is_head",
        "_in_head",
        "_head_done",
        "_request_done",
        "_response_started",
        "_keep",
        "_until_close",
        "_after_feed",
        "_conn_close_tok",
        "_conn_keep_tok",
        "_stream_task",
        "_in_iter",
        "_timer",
        "_timer_at",
        "_deadline",
        "body_pulled",
        "_cb",
        "_cb_arg",
        "_cb_resp",
        "_cb_idem",
        "_deliver",
        "_block",
        "_relay",
        "_read_timeout",
    )

    def __init__(self, pool: "UpstreamPool", loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.loop = loop
        self.transport: Any = None
        self._twrite: Any = None    # transport.write, looked up once
        self.parser = HttpResponseParser(self)
        self.state = DETACHED
        self.requests = 0
        self.idle_since = 0.0
        self._slot = True  # holds one of the pool's max_connections slots
        self._exc: UpstreamError | None = None
        self._resp: UpstreamResponse | None = None  # only while parsing the head
        self._body: _Body | None = None  # set while a request is outstanding
        self._head_waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._reading_paused = False
        self._is_head = False
        self._in_head = False
        self._head_done = False
        self._request_done = False
        self._response_started = False
        self._keep = True
        self._until_close = False
        self._after_feed = 0  # 1: release/close after feed_data; 2: also replace the parser
        self._conn_close_tok = False
        self._conn_keep_tok = False
        self._stream_task: asyncio.Task[Any] | None = None
        self._in_iter = False
        self._timer: Any = None       # the head timer (see _arm)
        self._timer_at = 0.0
        self._deadline = 0.0
        self.body_pulled = False  # whether send() took anything from a streamed body
        # callback mode (start()): who is told when the head is in, instead of a waiter
        self._cb: Any = None
        self._cb_arg: Any = None
        self._cb_resp: UpstreamResponse | None = None
        self._cb_idem = False
        self._deliver = False     # a final head arrived: call back after this feed
        self._block = False       # callback mode: the scanner's block form is wanted
        self._relay = False       # start(relay=True): relay_hook first, no objects yet
        self._read_timeout = 0.0  # (for the objects _materialize makes)

    # -- asyncio.Protocol ----------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self._twrite = transport.write
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover
                pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._relay:
            self._materialize()
        prev = self.state
        was_closed = prev == CLOSED
        self.state = CLOSED
        self._keep = False
        self._disarm()
        b = self._body
        if b is not None and self._exc is None and not b._done:
            if self._head_done and self._until_close and exc is None and not was_closed:
                # Read-until-close body: a clean EOF is the end of the message.
                b._done = True
                b._conn = None
                self._body = None
                b._wake()
            else:
                if self._head_done:
                    self._exc = ResetError(
                        "upstream closed the connection before the end of the body",
                        kind="body_truncated",
                        request_sent=True,
                        response_started=True,
                    )
                else:
                    self._exc = ResetError(
                        "upstream closed the connection before a complete response head",
                        request_sent=self._head_waiter is not None or self._cb is not None,
                        response_started=self._response_started,
                    )
                self._wake_all()
        self.pool._discard(self, prev)
        if self._cb is not None:
            self._call_back()

    def eof_received(self) -> bool | None:
        if self._relay:
            self._materialize()
        if self._body is None:
            # The server closed an idle keep-alive connection: drop it from the pool
            # now rather than when connection_lost is scheduled.
            self._close()
        return None  # let the transport close; connection_lost decides what it meant

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self._relay:
            if relay_hook(self, data):
                return          # answered and finished by the relay
            self._materialize()
        if self._body is None:
            # Bytes while no request is outstanding (or after a HEAD response): the
            # stream is out of sync; this connection can never be trusted again.
            self._close()
            return
        if not self._response_started and self._resp is not None and not self._is_head:
            # the first bytes of the response: when they are all of it, in the commonest
            # shape, one strict pass instead of llhttp (left at the message boundary)
            r = _scan_response_block(data) if self._block else _scan_response(data)
            if r is not None:
                self._response_started = True
                self._scanned(r, data)
                return
        self._response_started = True
        try:
            self.parser.feed_data(data)
        except HttpParserCallbackError as e:
            ctx = e.__context__
            if isinstance(ctx, _Stop):
                return  # _fail() already ran
            self._fail(ProtocolError(f"invalid response: {ctx!r}"))
            return
        except HttpParserUpgrade:
            self._fail(ProtocolError("unexpected protocol upgrade", kind="upgrade"))
            return
        except HttpParserError as e:
            self._fail(ProtocolError(f"malformed response: {e}"))
            return
        if self._after_feed:
            replace = self._after_feed == 2
            self._after_feed = 0
            self._finish_message(replace)
        if self._deliver:
            self._call_back()

    def _scanned(self, r: tuple, data: bytes) -> None:
        """A whole response taken by the scanner: what llhttp's callbacks and the end of
        data_received would have done with it (head, body, message complete, release,
        call back)."""
        resp = self._resp
        if self._block:
            status, resp.block, resp.block_date, cl, keep, start = r
        else:
            status, resp.headers, resp._fwd, cl, keep, start = r
        resp._named = None
        resp.content_length = cl
        resp.chunked = False
        resp.status = status
        resp.http_version = "1.1"
        resp.keep_alive = keep
        if not keep:
            self._keep = False
        self._head_done = True
        self._resp = None
        if self._cb is not None:
            self._deliver = True
        self._wake_writer()
        b = self._body
        if cl:
            b._chunks.append(data[start:])
            b._buffered += cl
        b._done = True
        b._wake()
        self._finish_message(False)
        if self._deliver:
            self._call_back()

    # -- httptools callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        resp = self._resp
        if resp is None or self._head_done:
            # A second response for one request.
            self._fail(ProtocolError("unsolicited response"))
            raise _Stop
        self._in_head = True
        resp.headers = []
        resp._fwd = []
        resp._named = None
        resp.content_length = None
        resp.chunked = False
        self._conn_close_tok = False
        self._conn_keep_tok = False

    def on_header(self, name: bytes, value: bytes) -> None:
        resp = self._resp
        if resp is None or not self._in_head:
            return  # chunked trailers: parsed (and validated) by llhttp, not forwarded
        k = name.decode("latin-1")
        v = value.decode("latin-1")
        resp.headers.append((k, v))
        n = len(name)
        if n in _HOP_LENGTHS:
            lname = name.lower()
            if lname == _CONTENT_LENGTH:
                # llhttp already rejects a second Content-Length and non-digits.
                resp.content_length = int(value)
                return
            if lname == _TRANSFER_ENCODING:
                # Only "chunked" as the final coding frames the body (RFC 9112 6.3).
                resp.chunked = value[value.rfind(b",") + 1:].strip().lower() == b"chunked"
                return
            if lname == _CONNECTION:
                for tok in value.lower().split(b","):
                    tok = tok.strip()
                    if tok == b"close":
                        self._conn_close_tok = True
                    elif tok == b"keep-alive":
                        self._conn_keep_tok = True
                    elif tok:
                        if resp._named is None:
                            resp._named = set()
                        resp._named.add(tok.decode("latin-1"))
                return
            if lname in _HOP_BYTES:
                return
        resp._fwd.append((k, v))

    def on_headers_complete(self) -> None:
        resp = self._resp
        assert resp is not None
        self._in_head = False
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                return  # llhttp raises HttpParserUpgrade right after this
            return  # interim response (100, 103): wait for the final one
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            self._fail(ProtocolError(f"unsupported HTTP version {version}", kind="version"))
            raise _Stop
        resp.status = status
        resp.http_version = version
        self._head_done = True
        if self._is_head:
            resp._has_body = False
            # llhttp does not know this was a HEAD: it would wait for the body that
            # Content-Length announces. Finish here and use a fresh parser next time.
            if version == "1.1":
                keep = not self._conn_close_tok
            else:
                keep = self._conn_keep_tok and not self._conn_close_tok
            resp.keep_alive = keep
            if not keep:
                self._keep = False
            self._body._done = True  # type: ignore[union-attr]
            self._after_feed = 2
        else:
            resp.keep_alive = keep = parser.should_keep_alive()
            if not keep:
                self._keep = False
            if status == 204 or status == 304:
                resp._has_body = False
            elif not resp.chunked and resp.content_length is None:
                self._until_close = True
        self._resp = None  # the request coroutine holds it; the body state is enough now
        if self._cb is not None:
            self._deliver = True
        self._wake_writer()

    def on_body(self, data: bytes) -> None:
        b = self._body
        if b is None or b._done:
            # body bytes after a HEAD response: out of sync
            self._keep = False
            return
        b._chunks.append(data)
        b._buffered += len(data)
        w = b._waiter
        if w is not None and not w.done():
            w.set_result(None)
        if b._buffered > HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def on_message_complete(self) -> None:
        b = self._body
        if b is None or not self._head_done:
            return  # end of an interim (1xx) response
        if self._after_feed:
            return  # HEAD: already complete
        b._done = True
        b._wake()
        self._after_feed = 1

    # -- internals ------------------------------------------------------------

    def _wake_writer(self) -> None:
        w = self._head_waiter
        if w is not None and not w.done():
            w.set_result(None)
        w = self._drain_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _finish_message(self, replace_parser: bool) -> None:
        """The response is complete: detach it and give the connection back (or close it)."""
        b = self._body
        self._body = None
        self._resp = None
        if b is not None:
            b._conn = None
        if replace_parser:
            self.parser = HttpResponseParser(self)
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        if self._keep and self._request_done and self._exc is None and self.state == ACTIVE:
            self._head_done = False
            self._response_started = False
            self._until_close = False
            self.pool._release(self)
        else:
            self._close()

    def _resume_reading(self) -> None:
        if self._reading_paused and self.state != CLOSED:
            self._reading_paused = False
            self.transport.resume_reading()

    def _wake_all(self) -> None:
        for w in (self._head_waiter, self._drain_waiter):
            if w is not None and not w.done():
                w.set_result(None)
        b = self._body
        if b is not None:
            b._conn = None
            if not b._done:
                if b._exc is None:
                    b._exc = self._exc
                b._wake()
        if self._in_iter and self._stream_task is not None:
            # Waiting on the caller's body iterator: only cancellation interrupts it.
            self._stream_task.cancel()

    def _fail(self, exc: UpstreamError) -> None:
        """Record a fatal error, wake whoever waits, and drop the connection."""
        if self._relay:
            self._materialize()
        if self._exc is not None:
            return
        self._exc = exc
        self._keep = False
        self._wake_all()
        self._close()
        if self._cb is not None:
            self._call_back()

    def _call_back(self) -> None:
        """Callback mode: tell the starter how it went, once. With the response when a
        final head arrived (its body may be whole, partial, or failed: the response says);
        else with the error, and whether the request may be sent again on a fresh
        connection (the stale keep-alive race, as in :meth:`UpstreamPool.request`)."""
        cb = self._cb
        arg = self._cb_arg
        resp = self._cb_resp
        self._cb = None
        self._cb_arg = None
        self._cb_resp = None
        if self._deliver:
            self._deliver = False
            cb(arg, resp, None, False)
            return
        exc = self._exc
        if exc is None:  # pragma: no cover - every caller set it
            exc = ResetError("connection closed", kind="closed")
        retry = False
        if isinstance(exc, ResetError):
            retry = not exc.request_sent or (
                self.requests > 1 and not exc.response_started and self._cb_idem)
        cb(arg, None, exc, retry)

    def _close(self) -> None:
        if self._relay:
            self._materialize()
        prev = self.state
        if prev == CLOSED:
            return
        self.state = CLOSED
        self._keep = False
        self._disarm()
        t = self.transport
        if t is not None:
            t.abort()
        self.pool._discard(self, prev)

    def _arm(self, deadline: float) -> None:
        """Make sure the head timer fires no later than ``deadline``. One timer per
        connection, not per request: it is re-armed only when it would fire too late
        (a shorter timeout than the one it was set for) or after it fired."""
        self._deadline = deadline
        t = self._timer
        if t is not None:
            if self._timer_at <= deadline:
                return
            t.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _disarm(self) -> None:
        t = self._timer
        if t is not None:
            self._timer = None
            t.cancel()

    def _on_timer(self) -> None:
        self._timer = None
        if self._relay:
            self._materialize()
        if self._body is None or self._head_done or self.state == CLOSED:
            return  # no request waits for a head: the next send() arms again
        if self.loop.time() < self._deadline:
            self._arm(self._deadline)  # set for an earlier request (or fired a little early)
            return
        self._fail(UpstreamTimeout("no response head within the integration timeout"))

    # -- the request ------------------------------------------------------------

    def start(self, head: bytes, is_head: bool, idempotent: bool, deadline: float,
              read_timeout: float, cb: Any, arg: Any, block: bool, relay: bool = False) -> None:
        """Callback mode, for a request without a body: write it and return at once.
        ``cb(arg, response, error, retry)`` is called from the protocol callbacks once: right
        after the data that completed the final response head was parsed (with the whole
        body too when it came along), or on an error before that (a timeout included).

        With ``relay`` (block mode, not for HEAD) no response object is made up front: the
        first read goes to ``relay_hook(conn, data)``, which either answers the client from
        it and finishes the request (:meth:`_relayed`; ``cb`` is not called), or declines;
        then, and on any other event first (EOF, loss, timeout, failure), the objects are
        made (:meth:`_materialize`) and everything goes on as in block mode."""
        if relay and not is_head:
            self._request_state(False, True)
            self._relay = True
            self._read_timeout = read_timeout
            self._cb_resp = None
        else:
            self._cb_resp = self._new_request(is_head, read_timeout, True)
        self._head_waiter = None
        self._cb = cb
        self._cb_arg = arg
        self._cb_idem = idempotent
        self._deliver = False
        self._block = block
        self._arm(deadline)
        self._twrite(head)

    def _materialize(self) -> None:
        """A relayed request the relay did not finish: the response and body state that
        start() makes in block mode, made now (nothing was consumed yet)."""
        self._relay = False
        resp = UpstreamResponse(_Body(self, self.loop, self._read_timeout))
        self._resp = resp
        self._body = resp._b
        self._cb_resp = resp

    def _relayed(self, keep: bool) -> None:
        """The relay answered the client from the whole response it was given (keep: the
        upstream's keep-alive): what the end of a scanned response does to the connection,
        without a response object: released to the pool, or closed."""
        self._relay = False
        self._cb = None
        self._cb_arg = None
        if not keep:
            self._keep = False
        self._finish_message(False)

    def _new_request(self, is_head: bool, read_timeout: float, request_done: bool) -> UpstreamResponse:
        """The response (and its body state) of a request about to be written."""
        resp = UpstreamResponse(_Body(self, self.loop, read_timeout))
        self._resp = resp
        self._body = resp._b
        self._request_state(is_head, request_done)
        return resp

    def _request_state(self, is_head: bool, request_done: bool) -> None:
        """The connection's per-request flags, reset for a request about to be written."""
        self._is_head = is_head
        self._request_done = request_done
        self._head_done = False
        self._response_started = False
        self._until_close = False
        self._after_feed = 0
        self._block = False   # (start() sets it for its own request)
        self.body_pulled = False
        self.requests += 1

    async def send(
        self,
        head: bytes,
        body: Any,
        body_length: int | None,
        is_head: bool,
        deadline: float,
        read_timeout: float,
    ) -> UpstreamResponse:
        """Write one request and wait for the final response head."""
        if self.state != ACTIVE:
            raise ResetError("connection closed before the request was sent", request_sent=False)
        loop = self.loop
        resp = self._new_request(is_head, read_timeout, False)
        b = resp._b
        waiter = self._head_waiter = loop.create_future()
        self._arm(deadline)
        transport = self.transport
        # Once the head (and maybe the whole response) has arrived, this connection may
        # already be back in the pool serving another request before this coroutine
        # resumes: from here on only look at `b`, never at per-request connection state.
        try:
            if body is None:
                transport.write(head)
            elif isinstance(body, bytes):
                if len(body) <= _COALESCE_MAX:
                    transport.write(head + body)
                else:
                    transport.write(head)
                    transport.write(body)
            elif isinstance(body, (bytearray, memoryview)):
                transport.write(head)
                transport.write(body)
            else:
                transport.write(head)
                await self._write_stream(body, body_length, waiter)
            self._request_done = True
            if not waiter.done():
                await waiter
            exc = b._exc
            if exc is not None:
                raise exc
        except BaseException:
            if self._body is b and self._exc is None:
                # caller cancelled, or the body iterator raised: the stream is unusable
                self._fail(ResetError("request aborted", kind="aborted"))
            raise
        return resp

    async def _write_stream(
        self, body: AsyncIterator[bytes], body_length: int | None, head_waiter: "asyncio.Future[None]"
    ) -> None:
        transport = self.transport
        chunked = body_length is None
        sent = 0
        self._stream_task = asyncio.current_task()
        it = body.__aiter__()
        try:
            while True:
                self._in_iter = True
                self.body_pulled = True
                try:
                    chunk = await it.__anext__()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if self._exc is not None:
                        task = self._stream_task
                        if task is not None:
                            task.uncancel()
                        return
                    raise
                finally:
                    self._in_iter = False
                if self._exc is not None:
                    return
                if head_waiter.done():
                    # Early response (e.g. 413): stop sending; the connection cannot be reused.
                    self._keep = False
                    return
                n = len(chunk)
                if not n:
                    continue
                sent += n
                if chunked:
                    if n <= 16384:
                        transport.write(b"%x\r\n%b\r\n" % (n, chunk))
                    else:
                        transport.writelines((b"%x\r\n" % n, chunk, _CHUNK_END))
                else:
                    if sent > body_length:  # type: ignore[operator]
                        raise BodyLengthError(f"request body longer than declared {body_length}")
                    transport.write(chunk)
                if self._write_paused:
                    fut = self._drain_waiter = self.loop.create_future()
                    try:
                        await fut
                    finally:
                        self._drain_waiter = None
                    if self._exc is not None or head_waiter.done():
                        if self._exc is None:
                            self._keep = False
                        return
            if chunked:
                transport.write(_LAST_CHUNK)
            elif sent != body_length:
                raise BodyLengthError(f"request body shorter ({sent}) than declared {body_length}")
        finally:
            self._stream_task = None
            self._in_iter = False



_FRAMING_LEN = (14, 17)  # len("content-length"), len("transfer-encoding")
_FRAMING = ("content-length", "transfer-encoding")
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))
_IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
_KNOWN_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"))
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Per-target limits. Built once at config time and shared by the target's pool."""

    max_connections: int = 256  # per target; extra requests wait (bounded by their timeout)
    idle_timeout: float = 60.0  # an idle keep-alive connection is closed after this
    connect_timeout: float = 5.0
    max_idle: int = 64

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        if self.max_idle < 0:
            raise ValueError("max_idle must be >= 0")
        if self.idle_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be > 0")


_DEFAULT_SETTINGS = PoolSettings()

#: ``relay_hook(conn, data) -> bool`` for requests started with ``relay`` (set by
#: gwcore.lane, the one user): True when it answered the client and called conn._relayed()
relay_hook: Any = None


# -- header rules shared by the request and response paths (RFC 9110 section 7.6.1) --------

#: always hop-by-hop, never forwarded either way
HOP_BY_HOP = frozenset((
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
))

#: set by the gateway itself on the way to the upstream
REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "x-forwarded-for", "x-forwarded-proto",
                             "x-forwarded-port", "x-forwarded-host", "forwarded"}

#: dropped from upstream responses: hop-by-hop, and Content-Length (the server recomputes framing)
_RESPONSE_DROP = HOP_BY_HOP | {"content-length"}


def connection_tokens(headers) -> frozenset | None:
    """Names listed in Connection headers (lower-case), or None when there is none."""
    toks = None
    for k, v in headers:
        if len(k) == 10 and k.lower() == "connection":
            if toks is None:
                toks = set()
            for t in v.split(","):
                t = t.strip().lower()
                if t:
                    toks.add(t)
    return frozenset(toks) if toks is not None else None


def strip_response(headers) -> list:
    """Upstream response headers minus hop-by-hop ones and those named in Connection, and
    minus Content-Length (the server recomputes framing)."""
    named = connection_tokens(headers)
    out = []
    drop = _RESPONSE_DROP
    for k, v in headers:
        lk = k.lower()
        if lk in drop or (named is not None and lk in named):
            continue
        out.append((k, v))
    return out


def outgoing_headers(headers, host_value, peer_ip, scheme, fwd_port) -> list:
    """The headers sent upstream for a client request's (lower-case) ``headers``: hop-by-hop
    ones and those named in Connection stripped, then Host, X-Forwarded-For (the client's
    chain plus ``peer_ip``), X-Forwarded-Proto and X-Forwarded-Port set by the gateway."""
    named = connection_tokens(headers)
    drop = REQUEST_DROP
    keep_xff = named is None or "x-forwarded-for" not in named
    xff = None
    out = []
    for k, v in headers:
        if k in drop:
            if keep_xff and k == "x-forwarded-for":
                xff = v if xff is None else xff + ", " + v
            continue
        if named is not None and k in named:
            continue
        out.append((k, v))
    out.append(("host", host_value))
    out.append(("x-forwarded-for", xff + ", " + peer_ip if xff else peer_ip))
    out.append(("x-forwarded-proto", scheme))
    out.append(("x-forwarded-port", fwd_port))
    return out


def body_framing(method: str) -> str:
    """The framing line of a body-less request: ``Content-Length: 0`` for the methods that
    usually carry a body (a server may otherwise wait for one, or answer 411)."""
    return "Content-Length: 0\r\n" if method in _BODY_METHODS else ""


def encode_head(
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    framing: str,
) -> bytes:
    """Request line + headers + the framing header, latin-1, ready to write.

    ``framing`` is the already formatted framing header line(s) (``""`` for none).
    Caller-supplied Content-Length / Transfer-Encoding are dropped: the body we are
    given decides the framing. CR or LF inside any name or value is refused
    (header injection), as is whitespace in the request target.
    """
    if " " in target or "\r" in target or "\n" in target or not target:
        raise ValueError("invalid request target")
    if method not in _KNOWN_METHODS and not _TOKEN.fullmatch(method):
        raise ValueError("invalid request method")
    r = _fields(headers, _FRAMING, None) if type(headers) is list else None
    if r is not None:       # the common case, written in one pass (gwcore.h1scan.fields)
        return b"".join((f"{method} {target} HTTP/1.1\r\n".encode("latin-1"), r[0],
                         framing.encode("latin-1"), b"\r\n"))
    parts = [f"{n}: {v}\r\n" for n, v in headers if len(n) not in _FRAMING_LEN or n.lower() not in _FRAMING]
    lines = "".join(parts)
    # Each part ends in its own CRLF; any other CR or LF is an injection attempt.
    # Counted at C speed over the joined block instead of checking every value.
    count = len(parts)
    if lines.count("\n") != count or lines.count("\r") != count:
        raise ValueError("CR or LF in a request header")
    return f"{method} {target} HTTP/1.1\r\n{lines}{framing}\r\n".encode("latin-1")


class UpstreamPool:
    """Pooled HTTP/1.1 client for one target. Create on the event loop that uses it."""

    __slots__ = (
        "host",
        "port",
        "unix_path",
        "settings",
        "source_address",
        "_loop",
        "_idle",
        "_open",
        "_in_use",
        "_waiters",
        "_closed",
        "_sweeper",
        "_conns",
        "_idle_timeout",
        "_max_idle",
    )

    def __init__(
        self,
        host: str,
        port: int,
        *,
        unix_path: str | None = None,
        settings: PoolSettings = _DEFAULT_SETTINGS,
        source_address: tuple[str, int] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.unix_path = unix_path
        self.settings = settings
        # read on every request: kept here as plain numbers (settings are frozen)
        self._idle_timeout = float(settings.idle_timeout)
        self._max_idle = int(settings.max_idle)
        self.source_address = source_address
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[Connection] = []  # oldest first; reuse takes the newest (warm)
        self._open = 0  # slots held: connecting + idle + in use
        self._in_use = 0
        self._waiters: deque[asyncio.Future[Connection | None]] = deque()
        self._closed = False
        self._sweeper: asyncio.TimerHandle | None = None
        self._conns: set[Connection] = set()

    def __repr__(self) -> str:
        where = f"unix:{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"
        return f"<UpstreamPool {where} {self.stats()}>"

    def stats(self) -> dict[str, int]:
        idle = len(self._idle)
        return {
            "open": self._open,
            "idle": idle,
            "in_use": self._in_use,
            "connecting": self._open - idle - self._in_use,
            "waiting": sum(1 for w in self._waiters if not w.done()),
        }

    # -- the request ------------------------------------------------------------

    async def request(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterator[bytes] | None,
        *,
        timeout: float,
        body_length: int | None = None,
        read_timeout: float | None = None,
        fresh: bool = False,
    ) -> UpstreamResponse:
        """Send one request; return once the final response head has arrived.

        ``timeout`` bounds everything up to the response head (waiting for a slot,
        connecting, sending the body, waiting); ``read_timeout`` (default: ``timeout``)
        bounds each wait for body bytes afterwards. ``fresh``: open a new connection instead
        of taking an idle one (closing the oldest idle one when every slot is taken), and do
        not retry: the retry of a :meth:`start` that met a stale connection. A request that
        has to queue for a slot may still be handed a kept-alive connection.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._closed:
            raise ConnectError("pool is closed", kind="closed")
        deadline = loop.time() + timeout

        if body is None:
            framing = body_framing(method)
            replayable = True
        elif isinstance(body, (bytes, bytearray, memoryview)):
            framing = f"Content-Length: {len(body)}\r\n"
            replayable = True
        else:
            framing = "Transfer-Encoding: chunked\r\n" if body_length is None else f"Content-Length: {body_length}\r\n"
            replayable = False  # unless send() fails before pulling from it
        head = encode_head(method, target, headers, framing)
        is_head = method == "HEAD"
        rt = timeout if read_timeout is None else read_timeout

        if not fresh:  # (fresh: a retry after start() met a stale keep-alive connection)
            conn = self._take_idle(loop.time())
            if conn is None:
                conn = await self._acquire(loop, deadline, False)
            try:
                return await conn.send(head, body, body_length, is_head, deadline, rt)
            except ResetError as e:
                # Stale keep-alive race: the server closed an idle connection just as we
                # reused it. Retry once on a new connection if no response byte came back
                # and the body can be sent again (bytes, or a stream not yet touched).
                # A request that may have reached the server is replayed only when it is
                # idempotent (RFC 9110 9.2.2): a POST the server got and then reset must
                # not run twice.
                if e.request_sent and (
                    conn.requests <= 1 or e.response_started
                    or (not replayable and conn.body_pulled) or method not in _IDEMPOTENT
                ):
                    raise
        conn = await self._acquire(loop, deadline, True)
        return await conn.send(head, body, body_length, is_head, deadline, rt)

    def ready(self) -> bool:
        """Whether :meth:`start` may find an idle connection (it can still find only stale
        ones and return False)."""
        return self._loop is not None and not self._closed and bool(self._idle)

    def start(self, method: str, target: str, headers: list, timeout: float, cb: Any,
              arg: Any) -> bool:
        """Send a request without a body on an idle keep-alive connection, in callback mode
        (see :meth:`Connection.start`); False, having sent nothing, when no idle connection
        is at hand (or the pool has not served a request yet): use :meth:`request` then.
        ``timeout`` bounds the wait for the response head and each wait for body bytes."""
        if not self.ready():
            return False
        # encoded before an idle connection is taken: a request it refuses (ValueError)
        # must not hold one
        head = encode_head(method, target, headers, body_framing(method))
        return self.start_head(head, method, timeout, cb, arg, False)

    def start_head(self, head: bytes, method: str, timeout: float, cb: Any, arg: Any,
                   block: bool, relay: bool = False) -> bool:
        """:meth:`start` for a head already encoded (what :func:`encode_head` makes of it,
        with :func:`body_framing`). With ``block``, a response the scanner takes whole
        (gwcore.h1scan.scan_response_block) comes with its forwarded headers written as
        lines in ``resp.block`` instead of as lists; with ``relay`` too, it goes to
        ``relay_hook`` first (see :meth:`Connection.start`)."""
        if not self.ready():
            return False
        return self.start_taken(head, method == "HEAD", method in _IDEMPOTENT, timeout, cb, arg,
                                block, relay)

    def start_taken(self, head: bytes, is_head: bool, idempotent: bool, timeout: float, cb: Any,
                    arg: Any, block: bool, relay: bool) -> bool:
        """:meth:`start_head` once :meth:`ready` said yes, for a method already known to be
        HEAD or not and idempotent or not (a forwarding lane knows both beforehand)."""
        now = _now()     # (the loop's clock, read now rather than at the loop pass)
        conn = self._take_idle(now)
        if conn is None:
            return False
        conn.start(head, is_head, idempotent, now + timeout, timeout, cb, arg, block, relay)
        return True

    # -- slots and connections ------------------------------------------------------

    def _take_idle(self, now: float):
        """The most recently used idle connection that has not outlived the idle timeout,
        now ACTIVE; None when there is none (stale ones met on the way are closed)."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            if now - conn.idle_since < self._idle_timeout:
                conn.state = ACTIVE
                self._in_use += 1
                return conn
            conn.state = DETACHED
            conn._close()
        return None

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float, fresh: bool) -> Connection:
        if not fresh:
            conn = self._take_idle(loop.time())
            if conn is not None:
                return conn
        elif self._open >= self.settings.max_connections and self._idle:
            # a new connection wanted, every slot taken, some by idle ones: drop the oldest
            old = self._idle.pop(0)
            old.state = DETACHED
            old._close()
        if self._open < self.settings.max_connections:
            self._open += 1
            return await self._connect(loop, deadline)
        # All slots busy: wait for a released connection or a freed slot.
        fut: asyncio.Future[Connection | None] = loop.create_future()
        self._waiters.append(fut)
        timer = loop.call_at(deadline, self._waiter_timeout, fut)
        try:
            conn_or_slot = await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                got = fut.result()
                if got is None:
                    self._slot_freed()
                else:
                    self._release(got)
            raise
        finally:
            timer.cancel()
        if conn_or_slot is None:
            if self._closed:
                self._slot_freed()
                raise ConnectError("pool is closed", kind="closed")
            return await self._connect(loop, deadline)
        if conn_or_slot.state != ACTIVE:
            # handed over, then closed by the peer before we ran: its slot went to
            # the next waiter; queue again (bounded by the same deadline)
            return await self._acquire(loop, deadline, fresh)
        return conn_or_slot

    def _waiter_timeout(self, fut: asyncio.Future[Connection | None]) -> None:
        if not fut.done():
            try:
                self._waiters.remove(fut)
            except ValueError:  # pragma: no cover
                pass
            fut.set_exception(UpstreamTimeout("timed out waiting for a free upstream connection", kind="pool_timeout"))

    async def _connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> Connection:
        """Open a connection in an already reserved slot."""
        conn = Connection(self, loop)
        remaining = deadline - loop.time()
        ct = self.settings.connect_timeout
        limit = ct if ct < remaining else remaining
        try:
            if limit <= 0:
                raise TimeoutError
            async with asyncio.timeout(limit):
                if self.unix_path is not None:
                    await loop.create_unix_connection(lambda: conn, self.unix_path)
                else:
                    await loop.create_connection(
                        lambda: conn, self.host, self.port, local_addr=self.source_address
                    )
        except TimeoutError:
            self._connect_failed(conn)
            if ct < remaining:
                raise ConnectError("connect timeout", kind="connect_timeout") from None
            raise UpstreamTimeout("integration timeout expired while connecting") from None
        except OSError as e:
            self._connect_failed(conn)
            raise ConnectError(f"connect failed: {e}") from None
        except BaseException:
            self._connect_failed(conn)
            raise
        if conn.state == CLOSED:  # closed already between connect and now
            raise ConnectError("connection closed right after connect", kind="connect")
        conn.state = ACTIVE
        self._in_use += 1
        self._conns.add(conn)
        return conn

    def _connect_failed(self, conn: Connection) -> None:
        t = conn.transport
        conn.state = CLOSED
        conn._slot = False
        if t is not None:
            t.abort()
        self._slot_freed()

    def _release(self, conn: Connection) -> None:
        """A connection (ACTIVE) finished a keep-alive response: hand it on or park it."""
        if self._closed:
            conn._close()
            return
        waiters = self._waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_result(conn)  # stays ACTIVE, still counted in use
                return
        self._in_use -= 1
        loop = conn.loop
        conn.state = IDLE
        conn.idle_since = _now_coarse()    # (idle seconds: a tick's precision is plenty)
        idle = self._idle
        idle.append(conn)
        if len(idle) > self._max_idle:
            old = idle.pop(0)
            old.state = DETACHED
            old._close()
        if self._sweeper is None and idle:
            self._sweeper = loop.call_at(idle[0].idle_since + self.settings.idle_timeout, self._sweep)

    def _discard(self, conn: Connection, prev: int) -> None:
        """A connection closed (by us or the peer) while in state ``prev``: free its slot once."""
        if not conn._slot:
            return
        conn._slot = False
        self._conns.discard(conn)
        if prev == ACTIVE:
            self._in_use -= 1
        elif prev == IDLE:
            try:
                self._idle.remove(conn)
            except ValueError:  # pragma: no cover
                pass
        self._slot_freed()

    def _slot_freed(self) -> None:
        self._open -= 1
        waiters = self._waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                self._open += 1
                w.set_result(None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        idle = self._idle
        if not idle:
            return
        loop = idle[0].loop
        cutoff = loop.time() - self.settings.idle_timeout
        while idle and idle[0].idle_since <= cutoff:
            conn = idle.pop(0)
            conn.state = DETACHED
            conn._close()
        if idle:
            self._sweeper = loop.call_at(idle[0].idle_since + self.settings.idle_timeout, self._sweep)

    async def close(self) -> None:
        """Stop accepting requests, close idle connections now and in-use ones when
        their response is done; waiting requests fail with ConnectError."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        waiters = self._waiters
        while waiters:
            w = waiters.popleft()
            if not w.done():
                w.set_exception(ConnectError("pool is closed", kind="closed"))
        idle = self._idle
        while idle:
            conn = idle.pop()
            conn.state = DETACHED
            conn._close()
        # Let the transports finish closing before the loop may go away.
        await asyncio.sleep(0)

