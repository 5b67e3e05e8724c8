"""The ``inline`` runtime: the handler runs inside the gateway worker process.

It is the fastest runtime (no process hop, no JSON round trip: the event dict goes straight
to the handler and the returned dict straight to the response) and what it trades away
for that is isolation:

- ``async def`` handlers are awaited on the gateway's event loop. They must not block: a
  blocking call in one stalls every request of that gateway worker. A timeout cancels them.
- plain (sync) handlers run in a thread pool of ``concurrency`` threads, so the event loop
  stays responsive while they run; but Python threads share one GIL, so CPU-heavy
  handlers still slow the gateway down, and a thread cannot be killed: on timeout the
  client gets the function error at once, while the handler keeps its thread (and its
  concurrency slot) until it returns by itself.
- there is no memory limit and no crash isolation: a handler that leaks, calls
  ``os._exit`` or segfaults takes the gateway worker with it. ``environment`` variables are
  set in the gateway process (shared by every inline function) when the function is first
  loaded; module-level state is shared by all invocations, as in a warm Lambda container.
- a handler's ``print``/``sys.stdout``/``sys.stderr`` output is captured per invocation
  (through a context variable); output written straight to file descriptors 1/2 by C code
  or child processes goes to the gateway's own stdout/stderr.

Use ``inline`` for trusted, short handlers; ``process`` for everything else.
"""
from __future__ import annotations

import asyncio
import contextvars
import importlib
import importlib.util
import inspect
import io
import os
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from .invocation import (FunctionLog, Limiter, Result, deadline_ms, error_result, init_error_result,
                         timeout_message)
from .spec import INIT_TIMEOUT
from .spec import FunctionSpec, log_stream_name
from .worker import (CognitoIdentity, LambdaContext, _InitError, error_document, import_handler_module,
                     make_client_context)

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


def _max_rss_mb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024


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


class InlineRuntime:
    def __init__(self, spec: FunctionSpec, log: FunctionLog, concurrency: int):
        self.spec = spec
        self.log = log
        self.limiter = Limiter(concurrency, spec.queue_wait)
        self._fn = None
        self._is_async = False
        self._init_error: dict | None = None
        self._init_lock: asyncio.Lock | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._concurrency = concurrency
        self._stream = log_stream_name(spec.name)

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
                self._fn = fn
                self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
                    getattr(fn, "__call__", None))
                if not self._is_async:
                    self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix=f"fn-{self.spec.name}",
                                                    initializer=_thread_loop)
            except _InitError as e:
                self._init_error = e.doc
            except Exception as e:  # noqa: BLE001
                self._init_error = error_document(e)
            return (time.perf_counter() - t0) * 1000

    async def invoke(self, event, request_id: str, client_context=None, identity=None) -> Result:
        await self.limiter.acquire()     # raises Throttled
        released = False
        try:
            init_ms = await self._ensure_loaded()
            if self._init_error is not None:
                return init_error_result(self.log, self._init_error, request_id, init_ms, _max_rss_mb())
            if isinstance(event, (bytes, bytearray, memoryview)):
                import orjson
                event = orjson.loads(event)
            spec = self.spec
            ctx = LambdaContext(spec.name, spec.memory_mb, request_id, spec.arn,
                                deadline_ms(spec.timeout), self._stream,
                                CognitoIdentity(identity), make_client_context(client_context))
            buf: list = []
            token = _capture.set(buf)
            t0 = time.perf_counter()
            status = None
            try:
                if self._is_async:
                    task = asyncio.ensure_future(self._fn(event, ctx))
                    fut = task
                else:
                    cctx = contextvars.copy_context()
                    fut = asyncio.get_running_loop().run_in_executor(self._pool, cctx.run, self._fn, event, ctx)
                done, _ = await asyncio.wait((fut,), timeout=spec.timeout)
                if not done:
                    status = "timeout"
                    etype, msg = timeout_message(request_id, spec.timeout)
                    res = error_result(etype, msg, request_id)
                    if self._is_async:
                        fut.cancel()
                    else:
                        # the thread runs on; its slot is released when it really ends
                        released = True
                        fut.add_done_callback(lambda f: (f.exception() if not f.cancelled() else None,
                                                         self.limiter.release()))
                    buf.append(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {msg}\n")
                else:
                    try:
                        res = Result(fut.result(), request_id=request_id)
                    except Exception as e:  # noqa: BLE001 - the handler's failure is the result
                        doc = error_document(e)
                        doc["requestId"] = request_id
                        buf.append(f"[ERROR] {doc['errorType']}: {doc['errorMessage']}\n"
                                   "Traceback (most recent call last):\n" + "\n".join(doc["stackTrace"]) + "\n")
                        res = Result(doc, error="Unhandled", request_id=request_id)
                        status = "error"
            finally:
                _capture.reset(token)
            dur = (time.perf_counter() - t0) * 1000
            res.log = self.log.record(request_id, "".join(buf), dur, _max_rss_mb(), init_ms, status)
            return res
        finally:
            if not released:
                self.limiter.release()

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
