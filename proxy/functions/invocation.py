"""What every runtime shares: the invocation result, reserved concurrency, and the
START / END / REPORT log lines."""
from __future__ import annotations

import asyncio
import collections
import math
import os
import signal
import sys
import time

import orjson


_UNSET = object()
_ceil = math.ceil


class Throttled(Exception):
    """No concurrency slot became free within the bounded wait (429)."""


class Result:
    """One invocation's outcome.

    The result is held as it came: ``value`` (a Python object, from ``inline``) or
    ``payload`` (JSON bytes, from the other runtimes); each is derived from the other on
    demand. ``error`` is ``None`` or the ``X-Amz-Function-Error`` value ("Unhandled").
    ``log`` is the invocation's START ... REPORT block (made from the prefixed copy the
    gateway's log got, on first use, when :meth:`FunctionLog.record_plain` wrote it).
    """

    __slots__ = ("_value", "_payload", "error", "_log", "_log_prefix", "request_id")

    def __init__(self, value=_UNSET, payload: bytes | None = None, error: str | None = None,
                 request_id: str = ""):
        self._value = value
        self._payload = payload
        self.error = error
        self._log = ""
        self._log_prefix: str | None = None
        self.request_id = request_id

    @property
    def log(self) -> str:
        p = self._log_prefix
        if p is not None:
            # every line of the block was written with the prefix and has no line break of
            # its own (record_plain's condition): take the prefixes off again
            self._log = self._log[len(p):].replace("\n" + p, "\n")
            self._log_prefix = None
        return self._log

    @log.setter
    def log(self, block: str) -> None:
        self._log = block
        self._log_prefix = None

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            try:
                self._payload = orjson.dumps(self._value)
            except TypeError:
                import json
                self._payload = json.dumps(self._value).encode()
        return self._payload

    @property
    def value(self):
        """The result as a Python object; ValueError when the payload is not JSON."""
        if self._value is _UNSET:
            self._value = orjson.loads(self._payload)   # orjson.JSONDecodeError is a ValueError
        return self._value

    @property
    def has_value(self) -> bool:
        return self._value is not _UNSET


def error_result(etype: str, message: str, request_id: str) -> Result:
    return Result({"errorMessage": message, "errorType": etype, "requestId": request_id,
                   "stackTrace": []}, error="Unhandled", request_id=request_id)


def init_error_result(log: "FunctionLog", err: dict, request_id: str, init_ms: float | None,
                      max_mb: int | None = None, init_output: str = "") -> Result:
    """The function-error result of a failed cold start: the init error document for this
    request, logged with its START/END/REPORT lines (every runtime answers it the same)."""
    doc = dict(err, requestId=request_id)
    doc.setdefault("stackTrace", [])
    res = Result(doc, error="Unhandled", request_id=request_id)
    res.log = log.record(request_id, f"[ERROR] {doc.get('errorType')}: {doc.get('errorMessage')}",
                         0.0, max_mb, init_ms, "error", init_output)
    return res


def deadline_ms(timeout: float) -> int:
    return int((time.time() + timeout) * 1000)


class Limiter:
    """Reserved concurrency: at most ``n`` at once; a caller waits at most ``wait`` seconds
    for a slot, then gets :class:`Throttled`.

    Waiters queue in order (``_waiters``: (future, deadline) pairs); one timer, armed for
    the oldest waiter's deadline, throttles the waiters whose time is up (every waiter waits
    the same ``wait``, so deadlines come in queue order) instead of a timer per waiter."""

    __slots__ = ("free", "wait", "_waiters", "_timer", "_timer_loop")

    def __init__(self, n: int, wait: float):
        self.free = n
        self.wait = wait
        self._waiters: collections.deque = collections.deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def try_acquire(self) -> bool:
        """Take a slot without waiting when one is free and nobody queues (the fast path:
        no coroutine); False means: ``await acquire()``."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        if self.wait <= 0:
            raise Throttled()
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        deadline = loop.time() + self.wait
        self._waiters.append((fut, deadline))
        if self._timer is None or self._timer_loop is not loop:
            self._timer = loop.call_at(deadline, self._expire, loop)
            self._timer_loop = loop
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release()     # we were handed a slot but will not use it
            raise

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer_loop is not loop:
            return                      # superseded by a timer on another loop
        self._timer = None
        now = loop.time() + 0.001       # (uvloop's clock and timers have 1 ms steps)
        waiters = self._waiters
        while waiters:
            fut, deadline = waiters[0]
            if not fut.done():
                if deadline > now:
                    self._timer = loop.call_at(deadline, self._expire, loop)
                    return
                fut.set_exception(Throttled())
            waiters.popleft()

    def release(self) -> None:
        waiters = self._waiters
        while waiters:
            w = waiters.popleft()[0]
            if not w.done():
                w.set_result(None)     # hand the slot over directly
                return
        self.free += 1


#: cap on the function output copied into the gateway log for one invocation
MAX_LOG = 256 * 1024
TAIL = 4096


class FunctionLog:
    """Writes each invocation's block (START, output, END, REPORT) to the gateway's log in
    one write, prefixed with the function name, and returns the unprefixed block so the
    Invoke API can return its tail.

    The block of an invocation without output (the common case) comes from templates made
    once per function (one ``%`` format, one ``os.write``)."""

    __slots__ = ("name", "memory_mb", "prefix", "fd", "_mem", "_plain", "_plain_p")

    def __init__(self, name: str, memory_mb: int, fd: int | None = None):
        self.name = name
        self.memory_mb = memory_mb
        self.prefix = p = f"[function {name}] "
        self.fd = fd
        self._mem = f" ms\tMemory Size: {memory_mb} MB\tMax Memory Used: "
        # START, END and REPORT up to its optional fields: (request id x3, duration,
        # billed duration, max memory used)
        lines = ("START RequestId: %s Version: $LATEST\n", "END RequestId: %s\n",
                 "REPORT RequestId: %s\tDuration: %.2f ms\tBilled Duration: %s" + self._mem.replace("%", "%%")
                 + "%s MB\t")
        self._plain = "".join(lines)
        pe = p.replace("%", "%%")
        self._plain_p = "".join(pe + ln for ln in lines)

    def record(self, request_id: str, output: str, duration_ms: float, max_mb: int | None,
               init_ms: float | None = None, status: str | None = None,
               init_output: str = "") -> str:
        billed = math.ceil(duration_ms)
        if not output and not init_output and request_id.isprintable():
            # no output (the common case): the three lines as they are, the prefixed
            # copy for the gateway's log made directly (same text as _write makes)
            args = (request_id, request_id, request_id, duration_ms, billed if billed > 1 else 1, max_mb or 0)
            tail = "\n"
            if init_ms is not None or status:
                tail = _report_tail(init_ms, status)
            self._write_text(self._plain_p % args + tail)
            return self._plain % args + tail
        rep = (f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
               f"Billed Duration: {billed if billed > 1 else 1}{self._mem}{max_mb or 0} MB\t")
        if init_ms is not None or status:
            rep += _report_tail(init_ms, status)[:-1]
        lines = []
        if init_output:
            lines.append(init_output.rstrip("\n"))
        lines.append(f"START RequestId: {request_id} Version: $LATEST")
        if output:
            if len(output) > MAX_LOG:
                output = "...\n" + output[-MAX_LOG:]
            lines.append(output.rstrip("\n"))
        lines.append(f"END RequestId: {request_id}")
        lines.append(rep)
        block = "\n".join(lines) + "\n"
        self._write(block)
        return block

    def record_plain(self, result: Result, request_id: str, duration_ms: float, max_mb: int) -> None:
        """``result.log = record(request_id, "", duration_ms, max_mb)`` for a warm invocation
        without output or error, the unprefixed block made only if it is asked for
        (see :attr:`Result.log`)."""
        if not request_id.isprintable():
            result.log = self.record(request_id, "", duration_ms, max_mb)
            return
        billed = _ceil(duration_ms)
        p = self.prefix
        text = (f"{p}START RequestId: {request_id} Version: $LATEST\n{p}END RequestId: {request_id}\n"
                f"{p}REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\tBilled Duration: "
                f"{billed if billed > 1 else 1}{self._mem}{max_mb or 0} MB\t\n")
        self._write_text(text)
        result._log = text
        result._log_prefix = p

    def _write(self, block: str) -> None:
        p = self.prefix
        self._write_text("".join(p + line + "\n" for line in block.splitlines()))

    def _write_text(self, text: str) -> None:
        fd = self.fd if self.fd is not None else 2
        try:
            os.write(fd, text.encode("utf-8", "replace"))
        except OSError:
            try:
                sys.stderr.write(text)
            except Exception:
                pass


def _report_tail(init_ms: float | None, status: str | None) -> str:
    """REPORT's optional fields, and the line's end."""
    tail = ""
    if init_ms is not None:
        tail = f"Init Duration: {init_ms:.2f} ms\t"
    if status:
        tail += f"Status: {status}\t"
    return tail + "\n"


def tail(log: str) -> str:
    """The last 4 KB of an invocation's log (what ``X-Amz-Log-Type: Tail`` returns)."""
    b = log.encode("utf-8", "replace")
    return b[-TAIL:].decode("utf-8", "ignore")


def timeout_message(request_id: str, timeout: float) -> tuple[str, str]:
    return "Sandbox.Timedout", f"RequestId: {request_id} Error: Task timed out after {timeout:.2f} seconds"


def exit_text(rc: int | None) -> str:
    """How a runtime process ended, as Lambda words it: "exit status 1", "signal: kill"."""
    if rc is None:
        return "unknown"
    if rc < 0:
        try:
            return f"signal: {signal.Signals(-rc).name.replace('SIG', '').lower()}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit status {rc}"
