"""The warm worker process of the ``process`` runtime, and the Lambda context object.

Run as ``python <this file> <read_fd> <write_fd>`` by :mod:`proxy.functions.process`. It
deliberately imports nothing from ``proxy`` (so a worker starts in tens of milliseconds and
the handler sees a plain interpreter): the gateway imports this file only for
:class:`LambdaContext`, which the ``inline`` runtime shares.

Protocol (both ways): frames of ``[u32 total][u32 header_len][header JSON][payload]``
(big-endian lengths). Parent -> worker: header ``{"id", "deadline_ms", "arn",
"client_context", "identity"}`` with the event JSON as payload. Worker -> parent: first one
frame ``{"ready": true}`` or ``{"init_error": {...}}``, then per invocation
``{"ok": bool, "maxrss_kb": int}`` with the result JSON (or the error document) as payload.

stdout and stderr (fds 1 and 2) are a file the parent shares (a memfd); the worker empties
it at the start of every invocation, so what it holds after the answer is exactly that
invocation's output, even if the worker dies in the middle.
"""
from __future__ import annotations

import os
import struct
import sys
import time
import traceback

_HDR = struct.Struct(">II")


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


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _write_frame(fd: int, header: bytes, payload: bytes) -> None:
    data = _HDR.pack(4 + len(header) + len(payload), len(header)) + header + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


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
    if ppid and os.getppid() != ppid:
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

    try:
        fn = load_handler(handler_name, task_root)
    except _InitError as e:
        _flush()
        _write_frame(wfd, dumps({"init_error": e.doc}), b"")
        os._exit(1)
    except BaseException as e:  # noqa: BLE001 - anything at init is an init error
        _flush()
        _write_frame(wfd, dumps({"init_error": error_document(e)}), b"")
        os._exit(1)
    is_async = _is_async(fn)
    loop = None
    _flush()
    _write_frame(wfd, b'{"ready":true}', b"")

    while True:
        try:
            total, hlen = _HDR.unpack(_read_exact(rfd, 8))
            data = _read_exact(rfd, total - 4)
        except EOFError:
            os._exit(0)
        header = loads(data[:hlen])
        _reset_log()
        ctx = LambdaContext(name, memory_mb, header["id"], header["arn"], header["deadline_ms"],
                            stream, CognitoIdentity(header.get("identity")),
                            make_client_context(header.get("client_context")))
        ok = True
        fatal = False
        try:
            event = loads(data[hlen:])
            if is_async:
                import asyncio
                if loop is None:
                    loop = asyncio.new_event_loop()
                result = loop.run_until_complete(fn(event, ctx))
            else:
                result = fn(event, ctx)
            payload = dump_result(result)
        except MemoryError as e:
            ok, fatal = False, True
            payload = dumps({"errorMessage": "Runtime exited: out of memory (limit "
                             f"{memory_mb} MB)", "errorType": "Runtime.OutOfMemory",
                             "requestId": header["id"], "stackTrace": []})
            del e
        except BaseException as e:  # noqa: BLE001 - the handler's failure is the result
            ok = False
            doc = error_document(e)
            doc["requestId"] = header["id"]
            try:
                print(f"[ERROR] {doc['errorType']}: {doc['errorMessage']}\nTraceback (most recent call last):\n"
                      + "\n".join(doc["stackTrace"]), file=sys.stderr)
            except Exception:
                pass
            if isinstance(e, (SystemExit, KeyboardInterrupt)):
                fatal = True
            payload = dump_result(doc)
        _flush()
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _write_frame(wfd, dumps({"ok": ok, "maxrss_kb": maxrss, "fatal": fatal}), payload)
        if fatal:
            os._exit(1)


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
    for s in (sys.stdout, sys.stderr):
        try:
            s.flush()
        except Exception:
            pass


def _reset_log() -> None:
    try:
        os.ftruncate(1, 0)
        os.lseek(1, 0, os.SEEK_SET)
    except OSError:
        pass


if __name__ == "__main__":
    main(sys.argv)
