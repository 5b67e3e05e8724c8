"""Keep-alive connection pool for one upstream target (one host:port or one unix socket).

Load balancing and health checks sit above this: they pick a target and call its
pool's :meth:`UpstreamPool.request`. A pool only knows its own target.

Slots: at most ``max_connections`` connections exist (connecting + idle + in use).
A request that finds neither an idle connection nor a free slot waits in FIFO order,
bounded by its own timeout. A released connection is handed straight to the oldest
waiter; a closed one gives its slot to the oldest waiter, who then connects.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator

from .errors import ConnectError, ResetError, UpstreamTimeout
from .protocol import ACTIVE, CLOSED, DETACHED, IDLE, Connection, UpstreamResponse

__all__ = ["PoolSettings", "UpstreamPool"]

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
    parts = [f"{n}: {v}\r\n" for n, v in headers if len(n) not in _FRAMING_LEN or n.lower() not in _FRAMING]
    lines = "".join(parts)
    # Each part ends in its own CRLF; any other CR or LF is an injection attempt.
    # Counted at C speed over the joined block instead of checking every value.
    n = len(parts)
    if lines.count("\n") != n or lines.count("\r") != n:
        raise ValueError("CR or LF in a request header")
    if " " in target or "\r" in target or "\n" in target or not target:
        raise ValueError("invalid request target")
    if method not in _KNOWN_METHODS and not _TOKEN.fullmatch(method):
        raise ValueError("invalid request method")
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
    ) -> UpstreamResponse:
        """Send one request; return once the final response head has arrived.

        ``timeout`` bounds everything up to the response head (waiting for a slot,
        connecting, sending the body, waiting); ``read_timeout`` (default: ``timeout``)
        bounds each wait for body bytes afterwards.
        """
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if self._closed:
            raise ConnectError("pool is closed", kind="closed")
        deadline = loop.time() + timeout

        if body is None:
            framing = "Content-Length: 0\r\n" if method in _BODY_METHODS else ""
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

        conn = await self._acquire(loop, deadline, False)
        try:
            return await conn.send(head, body, body_length, is_head, deadline, rt)
        except ResetError as e:
            # Stale keep-alive race: the server closed an idle connection just as we
            # reused it. Retry once on a new connection if no response byte came back
            # and the body can be sent again (bytes, or a stream not yet touched).
            # A request that may have reached the server is replayed only when it is
            # idempotent (RFC 9110 9.2.2): a POST the server got and then reset must not
            # run twice.
            if e.request_sent and (
                conn.requests <= 1 or e.response_started or (not replayable and conn.body_pulled)
                or method not in _IDEMPOTENT
            ):
                raise
        conn = await self._acquire(loop, deadline, True)
        return await conn.send(head, body, body_length, is_head, deadline, rt)

    # -- slots and connections ------------------------------------------------------

    async def _acquire(self, loop: asyncio.AbstractEventLoop, deadline: float, fresh: bool) -> Connection:
        if not fresh:
            idle = self._idle
            while idle:
                conn = idle.pop()
                if loop.time() - conn.idle_since < self.settings.idle_timeout:
                    conn.state = ACTIVE
                    self._in_use += 1
                    return conn
                conn.state = DETACHED
                conn._close()
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
        conn.idle_since = loop.time()
        idle = self._idle
        idle.append(conn)
        if len(idle) > self.settings.max_idle:
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

