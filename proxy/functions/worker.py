"""The warm worker process of the ``process`` runtime, and the Lambda context object.

Run as ``python <this file> <read_fd> <write_fd>`` by :mod:`proxy.functions.process`. It
deliberately imports nothing from ``proxy`` (so a worker starts in tens of milliseconds and
the handler sees a plain interpreter): the gateway imports this file only for
:class:`LambdaContext`, which the ``inline`` runtime shares, and the protocol's constants.

Protocol: frames ``[u32 length][fixed binary header][variable part]`` (big-endian; the
length counts what follows it), at most one request outstanding per worker.

- gateway -> worker (``REQ``): flags (u8: ``RESET_LOG``), deadline (u64, ms since the
  epoch), request id length (u16), extra length (u32); then the request id (ASCII), the
  extra (empty, or a JSON object with "client_context" and/or "identity": the Invoke API's)
  and the event JSON (the rest). The function's ARN comes once, in the environment.
- worker -> gateway (``REP``): kind (u8: ``READY``, ``INIT_ERROR``, ``OK``, ``ERROR``,
  ``FATAL``), peak RSS (u32, KB: the worker's VmHWM after the invocation, see ``_Peak``:
  REPORT's Max Memory Used), log end (u64: fd 1's offset once the handler is through);
  then the result JSON, or the error document (``INIT_ERROR``, ``ERROR``, and ``FATAL``:
  the worker exits right after sending it). First one ``READY`` or ``INIT_ERROR``, then
  one reply per request.

stdout and stderr (fds 1 and 2, one open file: one offset) are a file the parent shares (a
memfd). The worker does not empty it per invocation: the gateway knows where the previous
reply's output ended, and the new reply's log end says how many bytes this invocation wrote
(none: nothing to read). When the file has grown past a threshold, the gateway sets
``RESET_LOG`` on the next request and the worker truncates it (and rewinds) before running
the handler. Output written while the worker idles between invocations (a background
thread) counts as the next invocation's. If the worker dies or is killed mid-invocation,
the gateway reads from the previous log end to the end of the file: that invocation's
output up to that point.
"""
from __future__ import annotations

import os
import struct
import sys
import time
import traceback

#: gateway -> worker: length, flags, deadline_ms, request id length, extra length (the
#: gateway imports these: worker.py and process.py always come from the same checkout)
REQ = struct.Struct(">IBQHI")
#: worker -> gateway: length, kind, maxrss_kb, log end
REP = struct.Struct(">IBIQ")
RESET_LOG = 1
READY, INIT_ERROR, OK, ERROR, FATAL = 1, 2, 3, 4, 5
#: the gateway passes the protocol it speaks (_GWPROXY_PROTOCOL): a gateway process that
#: still runs older code (a reload in progress) and starts this file gets a clean exit at
#: init ("Runtime exited during init") instead of frames it cannot read
PROTOCOL = "2"
#: what the worker asks read() for (a request larger than this comes in parts)
READ_BUF = 1 << 16


# ---------------------------------------------------------------------------- the context

class CognitoIdentity:
    __slots__ = ("cognito_identity_id", "cognito_identity_pool_id")

    def __init__(self, d: dict | None = None):
        if not d:
            self.cognito_identity_id = self.cognito_identity_pool_id = None
            return
        self.cognito_identity_id = d.get("cognitoIdentityId") or d.get("cognito_identity_id")
        self.cognito_identity_pool_id = d.get("cognitoIdentityPoolId") or d.get("cognito_identity_pool_id")


class Client:
    __slots__ = ("installation_id", "app_title", "app_version_name", "app_version_code", "app_package_name")

    def __init__(self, d: dict):
        self.installation_id = d.get("installation_id")
        self.app_title = d.get("app_title")
        self.app_version_name = d.get("app_version_name")
        self.app_version_code = d.get("app_version_code")
        self.app_package_name = d.get("app_package_name")


class ClientContext:
    __slots__ = ("client", "custom", "env")

    def __init__(self, d: dict):
        c = d.get("client")
        self.client = Client(c) if c else None
        self.custom = d.get("custom")
        self.env = d.get("env")


def make_client_context(d):
    return ClientContext(d) if d else None


class LambdaContext:
    """What a Lambda handler receives as ``context`` (same attributes as AWS's)."""

    __slots__ = ("function_name", "function_version", "invoked_function_arn",
                 "memory_limit_in_mb", "aws_request_id", "log_group_name", "log_stream_name",
                 "identity", "client_context", "tenant_id", "_deadline_ms")

    def __init__(self, function_name: str, memory_mb: int, request_id: str, arn: str,
                 deadline_ms: int, log_stream_name: str, identity=None, client_context=None):
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = str(memory_mb)     # a string in AWS's own runtime, too
        self.aws_request_id = request_id
        self.log_group_name = "/aws/lambda/" + function_name
        self.log_stream_name = log_stream_name
        self.identity = identity if identity is not None else CognitoIdentity()
        self.client_context = client_context
        self.tenant_id = None
        self._deadline_ms = deadline_ms

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))

    def log(self, msg: str) -> None:
        sys.stdout.write(msg)

    def __repr__(self):
        return (f"LambdaContext([aws_request_id={self.aws_request_id},function_name="
                f"{self.function_name},function_version={self.function_version}])")


def error_document(exc: BaseException, tb=True) -> dict:
    """AWS's error document for an exception raised by a handler."""
    doc = {"errorMessage": str(exc), "errorType": type(exc).__name__,
           "requestId": "", "stackTrace": []}
    if tb:
        doc["stackTrace"] = [s.rstrip("\n") for s in traceback.format_list(traceback.extract_tb(exc.__traceback__))[1:]]
    return doc


def import_handler_module(modname: str, load):
    """``load()`` the handler's module, turning a failure into Lambda's init error."""
    try:
        return load()
    except SyntaxError as e:
        raise _InitError("Runtime.UserCodeSyntaxError", f"Syntax error in module '{modname}': {e}")
    except ImportError as e:
        raise _InitError("Runtime.ImportModuleError", f"Unable to import module '{modname}': {e}")
    except Exception as e:
        raise _InitError(type(e).__name__, str(e), e)


def load_handler(handler: str, task_root: str):
    """Import ``module.attr`` from ``task_root``; returns the callable or raises _InitError."""
    modname, _, attr = handler.rpartition(".")
    if not modname or not attr:
        raise _InitError("Runtime.MalformedHandlerName", f"Bad handler '{handler}': not enough values to unpack (expected 2, got 1)")
    import importlib
    mod = import_handler_module(modname, lambda: importlib.import_module(modname))
    fn = getattr(mod, attr, None)
    if fn is None:
        raise _InitError("Runtime.HandlerNotFound", f"Handler '{attr}' missing on module '{modname}'")
    if not callable(fn):
        raise _InitError("Runtime.HandlerNotFound", f"Handler '{attr}' on module '{modname}' is not callable")
    return fn


class _InitError(Exception):
    def __init__(self, etype: str, message: str, exc: BaseException | None = None):
        super().__init__(message)
        self.doc = {"errorMessage": message, "errorType": etype, "requestId": "",
                    "stackTrace": error_document(exc)["stackTrace"] if exc else []}


# ----------------------------------------------------------------------------- the worker

def _set_pdeathsig() -> None:
    """Die with the gateway worker that started us (Linux)."""
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _sched_batch() -> None:
    """SCHED_BATCH (Linux): the same CPU share as before (nice 0), but a worker woken up (a
    request arrives, the handler's I/O completes) does not preempt the task running on that
    CPU, usually the gateway's event loop: the gateway finishes its loop iteration (more
    requests handed out per iteration, fewer context switches) and the worker runs on a free
    CPU or at the next scheduling point. Inherited by the handler's child processes."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError):
        pass


def _read_frame(fd: int) -> bytes | bytearray:
    """Read one whole request (length prefix included): usually a single read(); a request
    larger than the pipe's buffer comes in parts. Raises EOFError when the gateway is gone."""
    data = os.read(fd, READ_BUF)
    n = len(data)
    if n >= 4 and n == 4 + int.from_bytes(data[:4], "big"):
        return data               # (more cannot come: one request at a time)
    if not n:
        raise EOFError
    buf = bytearray(data)
    while len(buf) < 4:
        chunk = os.read(fd, READ_BUF)
        if not chunk:
            raise EOFError
        buf += chunk
    need = 4 + int.from_bytes(buf[:4], "big")
    while len(buf) < need:
        chunk = os.read(fd, min(need - len(buf), 1 << 20))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def _send(fd: int, kind: int, maxrss_kb: int, log_end: int, payload: bytes = b"") -> None:
    """One reply frame, in one write (writev) unless the pipe takes it in parts."""
    head = REP.pack(REP.size - 4 + len(payload), kind, maxrss_kb & 0xFFFFFFFF, log_end)
    n = os.writev(fd, (head, payload)) if payload else os.write(fd, head)
    total = len(head) + len(payload)
    if n < total:
        view = memoryview(head + payload)[n:]
        while view:
            view = view[os.write(fd, view):]


def check_main() -> None:
    """``worker.py --check``: import the handler, exit 0, or print one problem line."""
    handler_name = os.environ.get("_HANDLER", "")
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    sys.path.insert(0, task_root)
    try:
        load_handler(handler_name, task_root)
    except _InitError as e:
        msg = e.doc["errorMessage"]
    except BaseException as e:  # noqa: BLE001
        msg = f"importing the handler raised {type(e).__name__}: {e}"
    else:
        _flush()
        os._exit(0)
    _flush()
    os.write(2, ("\nGWPROXY-CHECK: " + " ".join(msg.split()) + "\n").encode("utf-8", "replace"))
    os._exit(1)


def main(argv) -> None:
    if len(argv) > 1 and argv[1] == "--check":
        check_main()
    rfd, wfd = int(argv[1]), int(argv[2])
    ppid = int(os.environ.pop("_GWPROXY_PPID", "0") or 0)
    _set_pdeathsig()
    if os.environ.pop("_GWPROXY_SCHED_BATCH", ""):
        _sched_batch()
    if ppid and os.getppid() != ppid:
        os._exit(1)
    if os.environ.pop("_GWPROXY_PROTOCOL", "") != PROTOCOL:
        os.write(2, b"gwproxy worker: the gateway speaks another worker protocol (a reload in progress?)\n")
        os._exit(1)
    import json
    try:
        import orjson
        dumps = orjson.dumps
        loads = orjson.loads
    except ImportError:  # pragma: no cover - orjson is a gateway dependency
        orjson = None
        dumps = lambda o: json.dumps(o).encode()  # noqa: E731
        loads = json.loads

    def dump_result(obj) -> bytes:
        try:
            return dumps(obj)
        except TypeError:
            return json.dumps(obj).encode()   # what AWS's runtime uses (e.g. non-str keys)

    name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "function")
    memory_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
    stream = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
    handler_name = os.environ.get("_HANDLER", "")
    task_root = os.environ.get("LAMBDA_TASK_ROOT") or os.getcwd()
    limit = int(os.environ.pop("_GWPROXY_AS_LIMIT", "0") or 0)
    sys.path.insert(0, task_root)
    try:
        os.chdir(task_root)
    except OSError:
        pass
    if limit:
        import resource
        try:
            base = _vm_size()
            resource.setrlimit(resource.RLIMIT_AS, (base + limit, base + limit))
        except (ValueError, OSError):
            pass
    import resource
    getrusage = resource.getrusage
    RUSAGE_SELF = resource.RUSAGE_SELF
    peak = _Peak(getrusage, RUSAGE_SELF)
    arn = os.environ.pop("_GWPROXY_ARN", "")
    lseek = os.lseek
    SEEK_CUR = os.SEEK_CUR

    try:
        fn = load_handler(handler_name, task_root)
    except _InitError as e:
        _flush()
        _send(wfd, INIT_ERROR, 0, _log_end(), dumps(e.doc))
        os._exit(1)
    except BaseException as e:  # noqa: BLE001 - anything at init is an init error
        _flush()
        _send(wfd, INIT_ERROR, 0, _log_end(), dumps(error_document(e)))
        os._exit(1)
    is_async = _is_async(fn)
    loop = None
    _flush()
    _send(wfd, READY, peak.kb(), _log_end())

    unpack_req = REQ.unpack_from
    body = REQ.size
    while True:
        try:
            data = _read_frame(rfd)
        except EOFError:
            os._exit(0)
        _, flags, deadline, idlen, xlen = unpack_req(data)
        rid = data[body:body + idlen].decode()
        if flags & RESET_LOG:
            _reset_log()
        if xlen:
            extra = loads(data[body + idlen:body + idlen + xlen])
            ctx = LambdaContext(name, memory_mb, rid, arn, deadline, stream,
                                CognitoIdentity(extra.get("identity")),
                                make_client_context(extra.get("client_context")))
        else:
            ctx = LambdaContext(name, memory_mb, rid, arn, deadline, stream, CognitoIdentity())
        kind = OK
        try:
            event = loads(data[body + idlen + xlen:])
            if is_async:
                import asyncio
                if loop is None:
                    loop = asyncio.new_event_loop()
                result = loop.run_until_complete(fn(event, ctx))
            else:
                result = fn(event, ctx)
            payload = dump_result(result)
        except MemoryError as e:
            kind = FATAL
            payload = dumps({"errorMessage": "Runtime exited: out of memory (limit "
                             f"{memory_mb} MB)", "errorType": "Runtime.OutOfMemory",
                             "requestId": rid, "stackTrace": []})
            del e
        except BaseException as e:  # noqa: BLE001 - the handler's failure is the result
            kind = ERROR
            doc = error_document(e)
            doc["requestId"] = rid
            try:
                print(f"[ERROR] {doc['errorType']}: {doc['errorMessage']}\nTraceback (most recent call last):\n"
                      + "\n".join(doc["stackTrace"]), file=sys.stderr)
            except Exception:
                pass
            if isinstance(e, (SystemExit, KeyboardInterrupt)):
                kind = FATAL
            payload = dump_result(doc)
        _flush()
        try:
            log_end = lseek(1, 0, SEEK_CUR)
        except OSError:
            log_end = 0
        _send(wfd, kind, peak.kb(), log_end, payload)
        if kind == FATAL:
            os._exit(1)


class _Peak:
    """The worker's peak RSS (VmHWM), in KB, exact after every invocation, mostly without
    reading /proc.

    getrusage's ru_maxrss alone will not do: exec keeps the larger of the old and the new
    image's peak, and the old image is the gateway's (the worker is forked, or vforked, from
    it), so ru_maxrss starts at the gateway's peak RSS, usually well above the worker's own.
    Once ru_maxrss passes the value it had when the worker started, it is the worker's own
    peak. Until then the peak is read from /proc/self/status, and only after an invocation
    that took page faults (ru_minflt/ru_majflt, from the same getrusage call): resident
    memory grows through page faults, so without one the peak has not moved. A warm
    invocation that reuses the interpreter's memory takes none."""

    __slots__ = ("getrusage", "who", "inherited", "faults", "value", "fd")

    def __init__(self, getrusage, who):
        self.getrusage = getrusage
        self.who = who
        r = getrusage(who)
        self.inherited = r.ru_maxrss
        self.faults = -1
        self.value = 0
        try:
            self.fd = os.open("/proc/self/status", os.O_RDONLY)
        except OSError:
            self.fd = -1

    def kb(self) -> int:
        r = self.getrusage(self.who)
        faults = r.ru_minflt + r.ru_majflt
        if faults != self.faults:
            self.faults = faults
            if r.ru_maxrss > self.inherited:
                self.value = r.ru_maxrss
            else:
                self.value = self._vm_hwm(r.ru_maxrss)
        return self.value

    def _vm_hwm(self, fallback: int) -> int:
        try:
            data = os.pread(self.fd, 16384, 0)
            i = data.index(b"VmHWM:")
            return int(data[i + 6:data.index(b"kB", i)])
        except (OSError, ValueError):
            return fallback


def _is_async(fn) -> bool:
    import inspect
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _vm_size() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _flush() -> None:
    try:
        sys.stdout.flush()
    except Exception:
        pass
    try:
        sys.stderr.flush()
    except Exception:
        pass


def _log_end() -> int:
    try:
        return os.lseek(1, 0, os.SEEK_CUR)
    except OSError:
        return 0


def _reset_log() -> None:
    try:
        os.ftruncate(1, 0)
        os.lseek(1, 0, os.SEEK_SET)
    except OSError:
        pass


if __name__ == "__main__":
    main(sys.argv)
