"""The ``inline`` runtime: the handler runs inside the gateway worker process.

It is the fastest runtime (no process hop, no JSON round trip: the event dict goes straight
to the handler and the returned dict straight to the response) and what it trades away
for that is isolation:

- ``async def`` handlers are awaited on the gateway's event loop, inside the request's own
  task (no task of their own, no extra loop turn). They must not block: a blocking call in
  one stalls every request of that gateway worker. At the timeout they are cancelled and
  the client gets the timeout error; a handler that swallows the cancellation keeps its
  request waiting until it returns.
- plain (sync) handlers run as ``inline_sync`` says:

  - ``thread``: in a pool of ``concurrency`` threads, so the event loop stays responsive
    while they run; but every call pays a thread hop (two thread wake-ups and GIL hand-overs,
    tens of microseconds), Python threads share one GIL (CPU-heavy handlers still slow
    the gateway down), and a thread cannot be killed: on timeout the client gets the
    function error at once, while the handler keeps its thread (and its concurrency slot)
    until it returns by itself.
  - ``loop``: called directly on the event loop, no hop. While it runs nothing else in
    that gateway worker does (the handler's run time is added to the latency of every
    request in flight there), and a timeout cannot interrupt it: if it returns after its
    timeout the client gets the timeout error (and the gateway logs a warning). Inside it
    looks like Lambda's main thread: no running loop, and ``asyncio.get_event_loop()``
    returns a private loop of the function that the handler may run
    (``run_until_complete``, as Mangum does).
  - ``auto`` (the default): starts on threads and measures each call in its thread; after
    ``AUTO_PROMOTE_AFTER`` consecutive calls under ``AUTO_PROMOTE_BOUND`` it moves the
    function to the loop; one call on the loop over ``AUTO_DEMOTE_BOUND`` moves it back to
    threads for good (a warning is logged). The price: that one slow call (say, a cold
    cache or a network call a fast handler makes once in a while) blocks the loop once.

- there is no memory limit and no crash isolation: a handler that leaks, calls
  ``os._exit`` or segfaults takes the gateway worker with it. ``environment`` variables are
  set in the gateway process (shared by every inline function) when the function is first
  loaded; module-level state is shared by all invocations, as in a warm Lambda container.
- a handler's ``print``/``sys.stdout``/``sys.stderr`` output is captured per invocation
  (through a context variable); output written straight to file descriptors 1/2 by C code
  or child processes goes to the gateway's own stdout/stderr. Sync handlers run in a copy
  of the request's context; async handlers in the request's context itself (context
  variables they set stay visible to the rest of that request, never to other requests).

Use ``inline`` for trusted, short handlers; ``process`` for everything else.
"""
from __future__ import annotations

import asyncio
import contextvars
import importlib
import importlib.util
import inspect
import io
import logging
import os
import queue
import resource
import sys
import threading
import time
from typing import Any

import orjson

from .invocation import FunctionLog, Limiter, Result, error_result, init_error_result, timeout_message
from .spec import INIT_TIMEOUT
from .spec import INLINE_SYNC_MODES, FunctionSpec, log_stream_name
from .worker import (CognitoIdentity, LambdaContext, _InitError, error_document, import_handler_module,
                     make_client_context)

log = logging.getLogger("gwproxy")

#: ``inline_sync: auto``: a sync handler moves from its thread pool to the event loop after
#: this many consecutive calls, each of which took less than AUTO_PROMOTE_BOUND seconds
#: (wall time, measured in the thread around the handler call; a slower call restarts the
#: count). 50 calls see past a first call's lazy set-up; under 1 ms a call costs the loop
#: less than a request's own latency, while the thread hop (two thread wake-ups and GIL
#: hand-overs: ~30-80 us idle, more under load) is a large share of such a call's cost.
AUTO_PROMOTE_AFTER = 50
AUTO_PROMOTE_BOUND = 0.001
#: ...and back to the thread pool, for good, after one call on the loop that took longer
#: than this (the loop was blocked that long once; it will not be again)
AUTO_DEMOTE_BOUND = 0.005
#: REPORT's "Max Memory Used" (the gateway process's peak RSS) is sampled with
#: getrusage at most this often (seconds), not per invocation
RUSAGE_INTERVAL = 0.005

_perf = time.perf_counter
_time = time.time
_copy_context = contextvars.copy_context
_get_running_loop = asyncio.get_running_loop
_current_task: Any = asyncio.current_task
_tasks_by_loop = getattr(asyncio.tasks, "_current_tasks", None)
if sys.version_info < (3, 12) and isinstance(_tasks_by_loop, dict):
    # 3.11's current_task(loop) is a Python function returning _current_tasks.get(loop)
    _current_task = _tasks_by_loop.get
_CancelledError = asyncio.CancelledError
_aio_events = asyncio.events
_BaseDefaultPolicy = asyncio.events.BaseDefaultEventLoopPolicy
_get_running_loop_or_none = asyncio.events._get_running_loop
_set_running_loop = asyncio.events._set_running_loop

_capture: contextvars.ContextVar = contextvars.ContextVar("gwproxy_fn_output", default=None)
_install_lock = threading.Lock()


class _Tee(io.TextIOBase):
    """sys.stdout / sys.stderr replacement: writes go to the current invocation's buffer
    when there is one, to the real stream otherwise."""

    def __init__(self, real):
        self._real = real

    def write(self, s):
        buf = _capture.get()
        if buf is None:
            return self._real.write(s)
        buf.append(s)
        return len(s)

    def flush(self):
        if _capture.get() is None:
            self._real.flush()

    def fileno(self):
        return self._real.fileno()

    def isatty(self):
        return False

    @property
    def encoding(self):
        return getattr(self._real, "encoding", "utf-8")

    def writable(self):
        return True


def _install_capture() -> None:
    with _install_lock:
        if not isinstance(sys.stdout, _Tee):
            sys.stdout = _Tee(sys.stdout)
        if not isinstance(sys.stderr, _Tee):
            sys.stderr = _Tee(sys.stderr)


def _thread_loop() -> None:
    """Each handler thread gets its own event loop, as Lambda's main thread has one
    (Mangum and others call ``asyncio.get_event_loop()`` from sync handlers)."""
    asyncio.set_event_loop(asyncio.new_event_loop())


_rss_at = -1.0
_rss_mb = 0


def _max_rss_mb(now: float | None = None) -> int:
    """The process's peak RSS in MB, sampled at most every RUSAGE_INTERVAL seconds
    (``now``: a perf_counter() reading the caller already has)."""
    global _rss_at, _rss_mb
    if now is None:
        now = _perf()
    if now - _rss_at >= RUSAGE_INTERVAL or now < _rss_at:
        _rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        _rss_at = now
    return _rss_mb


def import_handler(spec: FunctionSpec):
    """Import ``spec.handler`` from ``spec.code`` into this process. Two functions may have
    modules of the same name in different code directories: the second is loaded under a
    private name."""
    modname, _, attr = spec.handler.rpartition(".")
    if not modname or not attr:
        raise _InitError("Runtime.MalformedHandlerName", f"Bad handler '{spec.handler}'")
    code = spec.code
    if code and code not in sys.path:
        sys.path.insert(0, code)
    path = _module_file(code, modname)

    def load():
        existing = sys.modules.get(modname)
        if existing is not None and path and os.path.abspath(getattr(existing, "__file__", "") or "") != path:
            # another function's module of the same name is loaded: load ours beside it
            alias = f"_gwproxy_fn_{spec.name}_{modname.replace('.', '_')}"
            mod = sys.modules.get(alias)
            if mod is None:
                s = importlib.util.spec_from_file_location(alias, path)
                mod = importlib.util.module_from_spec(s)
                sys.modules[alias] = mod
                s.loader.exec_module(mod)
            return mod
        return importlib.import_module(modname)

    mod = import_handler_module(modname, load)
    fn = getattr(mod, attr, None)
    if fn is None or not callable(fn):
        raise _InitError("Runtime.HandlerNotFound", f"Handler '{attr}' missing on module '{modname}'")
    return fn


def _module_file(code: str, modname: str) -> str | None:
    base = os.path.join(code, *modname.split("."))
    for p in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.exists(p):
            return os.path.abspath(p)
    return None


# ----------------------------------------------------------------------------- sync handlers

class _Job:
    """One sync handler call handed to a thread. ``done`` runs on the event loop when the
    thread is through: it wakes the waiting invocation or, when that one has already given
    up (timeout), calls ``late``."""

    __slots__ = ("loop", "waiter", "cctx", "fn", "event", "ctx", "value", "exc", "elapsed",
                 "finished", "late")

    def __init__(self, loop, waiter, cctx, fn, event, ctx):
        self.loop = loop
        self.waiter = waiter
        self.cctx = cctx
        self.fn = fn
        self.event = event
        self.ctx = ctx
        self.value = None
        self.exc = None
        self.elapsed = 0.0
        self.finished = False
        self.late = None

    def execute(self) -> None:
        """In the handler thread."""
        t0 = _perf()
        try:
            self.value = self.cctx.run(self.fn, self.event, self.ctx)
        except BaseException as e:  # noqa: BLE001 - handed to the invocation as is
            self.exc = e     # its traceback: this frame, then the handler's (error_document skips one)
        self.elapsed = _perf() - t0
        self.event = self.ctx = self.cctx = None
        try:
            self.loop.call_soon_threadsafe(self.done)
        except RuntimeError:
            pass     # the loop is closed: nobody is waiting any more

    def done(self) -> None:
        """On the event loop."""
        self.finished = True
        w = self.waiter
        if not w.done():
            w.set_result(None)
        elif self.late is not None:
            self.late(self)


def _wake(fut) -> None:
    if not fut.done():
        fut.set_result(None)


class _Threads:
    """A function's handler threads: at most ``n``, started when needed, each with its own
    event loop. Leaner than a ThreadPoolExecutor (no concurrent Future, no wrap_future):
    the thread calls back into the event loop itself."""

    def __init__(self, n: int, prefix: str):
        self.n = n
        self.prefix = prefix
        self.q: queue.SimpleQueue = queue.SimpleQueue()
        self.threads: list[threading.Thread] = []
        self.lock = threading.Lock()
        self.idle = 0        # threads waiting for a job
        self.pending = 0     # jobs not taken yet
        self.closed = False

    def submit(self, job: _Job) -> None:
        with self.lock:
            self.pending += 1
            spawn = self.pending > self.idle and len(self.threads) < self.n
        self.q.put(job)
        if spawn:
            t = threading.Thread(target=self._work, name=f"{self.prefix}_{len(self.threads)}", daemon=True)
            self.threads.append(t)
            t.start()

    def _work(self) -> None:
        _thread_loop()
        q = self.q
        lock = self.lock
        while True:
            with lock:
                self.idle += 1
            job = q.get()
            with lock:
                self.idle -= 1
                self.pending -= 1
            if job is None:
                return
            job.execute()
            job = None

    def close(self) -> None:
        """Jobs not started yet fail; running ones finish in their (daemon) threads."""
        self.closed = True
        while True:
            try:
                job = self.q.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                job.exc = RuntimeError("the function was shut down")
                job.finished = True
                try:
                    job.loop.call_soon_threadsafe(job.done)
                except RuntimeError:
                    pass
        for _ in self.threads:
            self.q.put(None)


class _LambdaThread:
    """Makes the gateway's event-loop thread look like Lambda's main thread for the length
    of a sync handler call (``inline_sync: loop``): no running loop, and
    ``asyncio.get_event_loop()`` returns the function's private loop. ``enter`` returns
    what ``leave`` puts back."""

    __slots__ = ("loop", "_policy", "_local")

    def __init__(self):
        self.loop = None
        self._policy = None     # the event loop policy last seen, and its thread-local
        self._local = None      # state (None: not a BaseDefaultEventLoopPolicy)

    def private(self):
        lp = self.loop
        if lp is None or lp.is_closed():
            lp = self.loop = asyncio.new_event_loop()
        return lp

    def enter(self):
        running = _get_running_loop_or_none()
        _set_running_loop(None)
        lp = self.loop
        if lp is None or lp.is_closed():
            lp = self.private()
        policy = _aio_events._event_loop_policy
        if policy is None or policy is not self._policy:
            if policy is None:
                policy = _aio_events.get_event_loop_policy()
            self._policy = policy
            self._local = getattr(policy, "_local", None) if isinstance(policy, _BaseDefaultPolicy) else None
        local = self._local
        if local is not None:
            prev = local._loop          # what set_event_loop() sets, without its side work
            local._loop = lp
            return running, local, prev
        asyncio.set_event_loop(lp)
        return running, None, None

    @staticmethod
    def leave(saved) -> None:
        running, local, prev = saved
        if local is not None:
            local._loop = prev
        else:
            asyncio.set_event_loop(running)
        _set_running_loop(running)

    def close(self) -> None:
        lp = self.loop
        self.loop = None
        if lp is not None and not lp.is_running() and not lp.is_closed():
            lp.close()


class _Deadline:
    """An async handler's timeout: cancels the request's task (which is awaiting the
    handler) when it fires."""

    __slots__ = ("task", "fired")

    def __init__(self, task):
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


class _Deadlines:
    """The timeouts of one function's calls in flight, with one loop timer instead of one
    per call (a uvloop timer armed and cancelled per call costs more than the rest of a
    fast call's timing together).

    ``active`` maps a call's key (the request's task, or the waiter future of a thread
    call) to its deadline; ``fire(key)`` ends a call whose time is up (and takes it out of
    ``active``, so a call that finds itself gone from ``active`` has timed out). Every call
    of a function has the same timeout, so deadlines come in the order calls start: the
    timer is armed for the oldest, and when it fires it ends the calls whose time is up
    and re-arms for the next. One event loop owns it; a call on another loop while the
    owner has calls in flight uses a timer of its own (``usable`` says False)."""

    __slots__ = ("active", "fire", "loop", "timer", "_gen")

    def __init__(self, fire):
        self.active: dict = {}
        self.fire = fire
        self.loop = None
        self.timer = None
        self._gen = 0

    def usable(self, loop) -> bool:
        own = self.loop
        if own is loop:
            return True
        if own is None or not self.active or own.is_closed():
            self.loop = loop
            self.active = {}
            self.timer = None       # one armed on the old loop is ignored (generation)
            self._gen += 1
            return True
        return False

    def add(self, key, deadline: float) -> None:
        """``key``'s call ends at ``deadline`` (in ``loop.time()``), and not before the
        calls added earlier."""
        self.active[key] = deadline
        if self.timer is None:
            self._gen += 1
            self.timer = self.loop.call_at(deadline, self._expire, self._gen)

    def _expire(self, gen: int) -> None:
        if gen != self._gen:
            return
        self.timer = None
        active = self.active
        loop = self.loop
        now = loop.time() + 0.001       # (uvloop's clock and timers have 1 ms steps)
        while active:
            key = next(iter(active))
            deadline = active[key]
            if deadline > now:
                self._gen += 1
                self.timer = loop.call_at(deadline, self._expire, self._gen)
                return
            del active[key]
            try:
                self.fire(key)
            except Exception:  # noqa: BLE001 - the others' timeouts must still fire
                log.exception("function timeout")


def _cancel(task) -> None:
    task.cancel()


class _Context(LambdaContext):
    """The handler's LambdaContext, its function's constant attributes taken from the
    runtime as they are (no per-call string building)."""

    __slots__ = ()

    def __init__(self, rt, request_id: str, deadline_ms: int, identity, client_context):
        self.function_name = rt._name
        self.function_version = "$LATEST"
        self.invoked_function_arn = rt._arn
        self.memory_limit_in_mb = rt._memory_str
        self.aws_request_id = request_id
        self.log_group_name = rt._log_group
        self.log_stream_name = rt._stream
        self.identity = identity
        self.client_context = client_context
        self.tenant_id = None
        self._deadline_ms = deadline_ms


_Context.__name__ = _Context.__qualname__ = "LambdaContext"


_ASYNC, _THREAD, _LOOP = 0, 1, 2
_TIMEDOUT = object()
_BYTES = (bytes, bytearray, memoryview)


class InlineRuntime:
    def __init__(self, spec: FunctionSpec, log: FunctionLog, concurrency: int):
        self.spec = spec
        self.log = log
        self.limiter = Limiter(concurrency, spec.queue_wait)
        self._fn: Any = None             # the handler, once loaded
        self._is_async = False
        self._init_error: dict | None = None
        self._init_lock: asyncio.Lock | None = None
        self._threads: Any = None       # _Threads, for sync handlers
        self._lambda_thread = _LambdaThread()
        self._concurrency = concurrency
        self._stream = log_stream_name(spec.name)
        self._setting = spec.inline_sync if spec.inline_sync in INLINE_SYNC_MODES else "auto"
        self._mode = _LOOP if self._setting == "loop" else _THREAD   # _ASYNC once loaded, for async handlers
        self._probing = False          # auto, on threads: counting fast calls
        self._auto = False             # auto, on the loop: a slow call demotes
        self._streak = 0
        # per-invocation constants
        self._name = spec.name
        self._memory_mb = spec.memory_mb
        self._memory_str = str(spec.memory_mb)      # a string in AWS's own runtime, too
        self._arn = spec.arn
        self._log_group = spec.log_group
        self._timeout = spec.timeout
        self._deadlines = _Deadlines(_cancel)       # async calls: cancel the request's task
        self._wakes = _Deadlines(_wake)             # thread calls: stop waiting

    @property
    def mode(self) -> str:
        """How the handler runs now: "async", "thread" or "loop" (before the first call:
        how a sync handler will start)."""
        if self._is_async:
            return "async"
        return "loop" if self._mode == _LOOP else "thread"

    async def _ensure_loaded(self) -> float | None:
        """Load the handler on first use; returns the init duration (ms) on that cold start."""
        if self._fn is not None or self._init_error is not None:
            return None
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self._fn is not None or self._init_error is not None:
                return None
            _install_capture()
            for k, v in (self.spec.environment or {}).items():
                os.environ[str(k)] = str(v)
            t0 = time.perf_counter()
            loop = asyncio.get_running_loop()
            try:
                fn = await asyncio.wait_for(loop.run_in_executor(None, import_handler, self.spec), INIT_TIMEOUT)
                self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
                    getattr(fn, "__call__", None))
                if self._is_async:
                    self._mode = _ASYNC
                else:
                    self._threads = _Threads(self._concurrency, f"fn-{self.spec.name}")
                    if self._setting == "loop":
                        self._mode = _LOOP
                    else:
                        self._mode = _THREAD
                        self._probing = self._setting == "auto"
                self._fn = fn
            except _InitError as e:
                self._init_error = e.doc
            except Exception as e:  # noqa: BLE001
                self._init_error = error_document(e)
            return (time.perf_counter() - t0) * 1000

    # -- auto ---------------------------------------------------------------------------
    def _observe_thread_call(self, elapsed: float) -> None:
        if elapsed < AUTO_PROMOTE_BOUND:
            self._streak += 1
            if self._streak >= AUTO_PROMOTE_AFTER and self._probing:
                self._probing = False
                self._auto = True
                self._mode = _LOOP
                log.info("function %s: its sync handler's last %d calls each took under %.1f ms: "
                         "calling it on the event loop from now on (inline_sync: auto)",
                         self._name, self._streak, AUTO_PROMOTE_BOUND * 1000)
        else:
            self._streak = 0

    def _demote(self, elapsed: float) -> None:
        self._auto = False
        self._mode = _THREAD
        log.warning("function %s: a call of its sync handler took %.1f ms on the event loop (over "
                    "%.1f ms): back to threads for good (inline_sync: auto; set inline_sync: thread "
                    "to never run it on the loop)", self._name, elapsed * 1000, AUTO_DEMOTE_BOUND * 1000)

    def _late_thread_call(self, job: _Job) -> None:
        """A thread call the invocation stopped waiting for (timeout) has ended."""
        self.limiter.release()
        if self._probing:
            self._observe_thread_call(job.elapsed)

    # -- invoke -------------------------------------------------------------------------
    def invoke_now(self, event: dict, request_id: str) -> Result | None:
        """``invoke(event, request_id)`` when it would not wait for anything (a loaded
        sync handler called on the loop, a free concurrency slot), without a coroutine;
        None: call ``invoke``."""
        if self._mode != _LOOP or self._fn is None:
            return None
        lim = self.limiter
        if lim.free <= 0 or lim._waiters:
            return None
        lim.free -= 1
        try:
            return self._call_loop(event, request_id, None, None, None)
        finally:
            if lim._waiters:
                lim.release()
            else:
                lim.free += 1

    async def invoke(self, event, request_id: str, client_context=None, identity=None) -> Result:
        lim = self.limiter
        if lim.free > 0 and not lim._waiters:
            lim.free -= 1
        else:
            await lim.acquire()     # raises Throttled
        released = False
        try:
            init_ms = None
            if self._fn is None:
                init_ms = await self._ensure_loaded()
                if self._init_error is not None:
                    return init_error_result(self.log, self._init_error, request_id, init_ms, _max_rss_mb())
            if type(event) is not dict and isinstance(event, _BYTES):
                event = orjson.loads(event)
            mode = self._mode
            if mode == _LOOP:
                return self._call_loop(event, request_id, init_ms, client_context, identity)
            timeout = self._timeout
            ctx = _Context(self, request_id, int((_time() + timeout) * 1000),
                           CognitoIdentity(identity) if identity else CognitoIdentity(),
                           make_client_context(client_context) if client_context else None)
            buf: list = []
            token = _capture.set(buf)
            value = exc = None
            t0 = _perf()
            try:
                if mode == _ASYNC:
                    loop = _get_running_loop()
                    task = _current_task(loop)
                    dls = self._deadlines
                    if task is None or (dls.loop is not loop and not dls.usable(loop)) or task in dls.active:
                        value, exc = await self._call_async(event, ctx, timeout)
                    else:
                        # awaited in the request's own task; at the deadline that task is
                        # cancelled (told apart from a cancellation from outside as
                        # asyncio.timeout() does)
                        dls.add(task, loop.time() + timeout)
                        active = dls.active
                        cancelling = task.cancelling()
                        try:
                            value = await self._fn(event, ctx)
                        except _CancelledError:
                            if active.pop(task, None) is not None:
                                raise               # not the deadline
                            fired = True
                        except Exception as e:  # noqa: BLE001 - the handler's failure is the result
                            exc = e
                            fired = active.pop(task, None) is None
                        except BaseException:
                            active.pop(task, None)
                            raise
                        else:
                            fired = active.pop(task, None) is None
                        if fired:
                            if task.uncancel() > cancelling:
                                raise _CancelledError()     # cancelled from outside as well
                            value = _TIMEDOUT
                            exc = None
                else:
                    loop = _get_running_loop()
                    waiter = loop.create_future()
                    job = _Job(loop, waiter, _copy_context(), self._fn, event, ctx)
                    self._threads.submit(job)
                    wakes = self._wakes
                    if wakes.loop is loop or wakes.usable(loop):
                        wakes.add(waiter, loop.time() + timeout)
                        h = None
                    else:
                        h = loop.call_at(loop.time() + timeout, _wake, waiter)
                    try:
                        await waiter
                    except BaseException:
                        if not job.finished:     # cancelled: the thread keeps its slot until it ends
                            job.late = self._late_thread_call
                            released = True
                        raise
                    finally:
                        if h is None:
                            wakes.active.pop(waiter, None)
                        else:
                            h.cancel()
                    if job.finished:
                        if self._probing:
                            self._observe_thread_call(job.elapsed)
                        if job.exc is not None:
                            exc = job.exc
                            job.exc = None
                            if not isinstance(exc, Exception):
                                raise exc
                        else:
                            value = job.value
                    else:
                        # the thread runs on; its slot is released when it really ends
                        job.late = self._late_thread_call
                        released = True
                        value = _TIMEDOUT
            finally:
                _capture.reset(token)
            t1 = _perf()
            return self._result(value, exc, request_id, buf, (t1 - t0) * 1000, t1, init_ms)
        finally:
            if not released:
                if lim._waiters:
                    lim.release()
                else:
                    lim.free += 1

    def _call_loop(self, event, request_id: str, init_ms, client_context, identity) -> Result:
        """A sync handler called on the event loop (the caller holds the concurrency slot)."""
        timeout = self._timeout
        ctx = _Context(self, request_id, int((_time() + timeout) * 1000),
                       CognitoIdentity(identity) if identity else CognitoIdentity(),
                       make_client_context(client_context) if client_context else None)
        buf: list = []
        cctx = _copy_context()
        cctx.run(_capture.set, buf)     # its output, in its copy of the context only
        value = exc = None
        lt = self._lambda_thread
        saved = lt.enter()
        t0 = _perf()
        try:
            value = cctx.run(self._fn, event, ctx)
        except Exception as e:  # noqa: BLE001 - the handler's failure is the result
            exc = e
        finally:
            t1 = _perf()
            lt.leave(saved)
        elapsed = t1 - t0
        if elapsed > AUTO_DEMOTE_BOUND and self._auto:
            self._demote(elapsed)
        if elapsed > timeout:
            value = _TIMEDOUT
            log.warning("function %s: its sync handler ran %.0f ms on the event loop, past its "
                        "%.2f s timeout (inline_sync: loop cannot interrupt it); request %s "
                        "got the timeout error", self._name, elapsed * 1000, timeout, request_id)
        if exc is None and not buf and init_ms is None and value is not _TIMEDOUT:
            # the common case, as _result has it
            res = Result(value, None, None, request_id)
            self.log.record_plain(res, request_id, elapsed * 1000,
                                  _rss_mb if 0.0 <= t1 - _rss_at < RUSAGE_INTERVAL else _max_rss_mb(t1))
            return res
        return self._result(value, exc, request_id, buf, elapsed * 1000, t1, init_ms)

    def _result(self, value, exc, request_id: str, buf: list, duration_ms: float, now: float,
                init_ms) -> Result:
        """The invocation's Result, its log block written."""
        if value is _TIMEDOUT:
            status = "timeout"
            etype, msg = timeout_message(request_id, self._timeout)
            res = error_result(etype, msg, request_id)
            buf.append(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {msg}\n")
        elif exc is not None:
            doc = error_document(exc)
            doc["requestId"] = request_id
            buf.append(f"[ERROR] {doc['errorType']}: {doc['errorMessage']}\n"
                       "Traceback (most recent call last):\n" + "\n".join(doc["stackTrace"]) + "\n")
            res = Result(doc, None, "Unhandled", request_id)
            status = "error"
        else:
            res = Result(value, None, None, request_id)
            if not buf and init_ms is None:
                self.log.record_plain(res, request_id, duration_ms, _max_rss_mb(now))
                return res
            status = None
        res.log = self.log.record(request_id, "".join(buf) if buf else "", duration_ms,
                                  _max_rss_mb(now), init_ms, status)
        return res

    async def _call_async(self, event, ctx, timeout: float):
        """Await the handler in the current task (no task of its own: nothing to schedule
        when it does not suspend); the timeout cancels the current task, which is told
        apart from a cancellation from outside as asyncio.timeout() does. Returns
        (value, exception); value is _TIMEDOUT on timeout."""
        loop = _get_running_loop()
        task = _current_task(loop)
        if task is None:      # not in a task (never from the gateway): a task of its own
            return await self._call_async_task(event, ctx, timeout)
        dl = _Deadline(task)
        h = loop.call_at(loop.time() + timeout, dl)
        cancelling = task.cancelling()
        value = exc = None
        try:
            value = await self._fn(event, ctx)
        except _CancelledError:
            if not dl.fired:
                raise
        except Exception as e:  # noqa: BLE001 - the handler's failure is the result
            exc = e
        finally:
            h.cancel()
        if dl.fired:
            if task.uncancel() > cancelling:
                raise _CancelledError()     # cancelled from outside as well
            return _TIMEDOUT, None
        return value, exc

    async def _call_async_task(self, event, ctx, timeout: float):
        fut = asyncio.ensure_future(self._fn(event, ctx))
        done, _ = await asyncio.wait((fut,), timeout=timeout)
        if not done:
            fut.cancel()
            return _TIMEDOUT, None
        try:
            return fut.result(), None
        except Exception as e:  # noqa: BLE001
            return None, e

    async def close(self) -> None:
        if self._threads is not None:
            self._threads.close()
        self._lambda_thread.close()
