"""Lambda's Invoke API on the admin listener, so Lambda SDK clients can call functions.

``POST /2015-03-31/functions/{name}/invocations`` with ``X-Amz-Invocation-Type``
``RequestResponse`` (default; 200 with the result, ``X-Amz-Function-Error: Unhandled`` on a
function error), ``Event`` (202, runs in the background) or ``DryRun`` (204), and
``X-Amz-Log-Type: Tail`` (the last 4 KB of the invocation's log, base64, in
``X-Amz-Log-Result``). ``{name}`` may be a name, ``name:$LATEST`` or a function ARN.
Also ``GET /2015-03-31/functions/`` (ListFunctions) and ``GET .../functions/{name}``
(GetFunction), enough for SDK clients that look a function up first.

Errors use Lambda's REST-JSON error shape (``x-amzn-ErrorType`` header and
``{"Type": "User", "message": ...}``), which is what botocore parses.
"""
from __future__ import annotations

import asyncio
import base64

import orjson

from ..context import Response, new_request_id
from .invocation import Throttled, tail
from .spec import ACCOUNT_ID

PREFIX = "/2015-03-31/functions"
MAX_SYNC_PAYLOAD = 6 * 1024 * 1024
MAX_ASYNC_PAYLOAD = 256 * 1024

_background: set = set()


def _error(status: int, etype: str, message: str, rid: str, extra: dict | None = None) -> Response:
    body = {"Type": "User", "message": message}
    if extra:
        body.update(extra)
    return Response(status, [("content-type", "application/json"), ("x-amzn-ErrorType", etype),
                             ("x-amzn-RequestId", rid)], orjson.dumps(body))


def _function_name(ref: str) -> tuple[str, str | None]:
    """(name, qualifier) from a name, 'name:qualifier', or an ARN."""
    if ref.startswith("arn:"):
        parts = ref.split(":")
        # arn:aws:lambda:region:account:function:name[:qualifier]
        if len(parts) >= 7 and parts[5] == "function":
            return parts[6], (parts[7] if len(parts) > 7 else None)
        return ref, None
    if ":" in ref:
        # account:function:name (partial ARN) or name:qualifier
        parts = ref.split(":")
        if len(parts) >= 3 and parts[1] == "function":
            return parts[2], (parts[3] if len(parts) > 3 else None)
        return parts[0], parts[1]
    return ref, None


def _query_param(query: str, name: str) -> str | None:
    from urllib.parse import parse_qsl
    for k, v in parse_qsl(query or "", keep_blank_values=True):
        if k == name:
            return v
    return None


def _configuration(spec) -> dict:
    return {
        "FunctionName": spec.name,
        "FunctionArn": spec.arn,
        "Runtime": "python3.11",
        "Role": f"arn:aws:iam::{ACCOUNT_ID}:role/gwproxy",
        "Handler": spec.handler,
        "CodeSize": 0,
        "Description": f"gwproxy {spec.runtime} function",
        "Timeout": max(1, int(round(spec.timeout))),
        "MemorySize": spec.memory_mb,
        "Version": "$LATEST",
        "PackageType": "Zip",
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "Environment": {"Variables": dict(spec.environment)},
        "Architectures": ["x86_64"],
    }


def routes(gateway) -> list:
    svc = gateway.services.functions

    def lookup(ref: str, query: str):
        name, qual = _function_name(ref)
        q = _query_param(query, "Qualifier")
        qual = qual or q
        if qual not in (None, "", "$LATEST"):
            return None, name
        return svc.get(name), name

    def not_found(name: str, rid: str) -> Response:
        return _error(404, "ResourceNotFoundException",
                      f"Function not found: arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:{name}", rid)

    async def invoke(areq) -> Response:
        rid = new_request_id()
        rest = areq.path[len(PREFIX):].strip("/")
        ref, sep, tailpart = rest.rpartition("/")
        if not sep or tailpart != "invocations" or not ref:
            return _error(404, "UnknownOperationException", "Unknown operation", rid)
        runtime, name = lookup(ref, areq.query)
        if runtime is None:
            return not_found(name, rid)
        h = areq.headers
        itype = h.get("x-amz-invocation-type", "RequestResponse") or "RequestResponse"
        if itype not in ("RequestResponse", "Event", "DryRun"):
            return _error(400, "InvalidParameterValueException",
                          f"Unsupported invocation type {itype!r}", rid)
        payload = areq.body or b"{}"
        limit = MAX_ASYNC_PAYLOAD if itype == "Event" else MAX_SYNC_PAYLOAD
        if len(payload) > limit:
            return _error(413, "RequestTooLargeException",
                          f"Request must be smaller than {limit} bytes for the InvokeFunction operation", rid)
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError as e:
            return _error(400, "InvalidRequestContentException",
                          f"Could not parse request body into json: {e}", rid)
        client_context = None
        cc = h.get("x-amz-client-context")
        if cc:
            try:
                client_context = orjson.loads(base64.b64decode(cc))
            except Exception:
                return _error(400, "InvalidRequestContentException", "Client context must be a valid Base64-encoded JSON object.", rid)
        base = [("x-amzn-RequestId", rid), ("x-amz-executed-version", "$LATEST")]
        if itype == "DryRun":
            return Response(204, base)
        if itype == "Event":
            t = asyncio.get_running_loop().create_task(_background_invoke(runtime, event, rid, client_context))
            _background.add(t)
            t.add_done_callback(_background.discard)
            return Response(202, [("x-amzn-RequestId", rid)])
        try:
            result = await runtime.invoke(event, rid, client_context)
        except Throttled:
            return _error(429, "TooManyRequestsException", "Rate Exceeded.", rid,
                          {"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded"})
        headers = [("content-type", "application/json")] + base
        if result.error:
            headers.append(("x-amz-function-error", result.error))
        if h.get("x-amz-log-type") == "Tail":
            headers.append(("x-amz-log-result", base64.b64encode(tail(result.log).encode()).decode("ascii")))
        return Response(200, headers, result.payload)

    async def get_function(areq) -> Response:
        rid = new_request_id()
        rest = areq.path[len(PREFIX):].strip("/")
        if not rest:
            fns = [_configuration(s) for s in svc.specs.values()]
            return Response(200, [("content-type", "application/json"), ("x-amzn-RequestId", rid)],
                            orjson.dumps({"Functions": fns}))
        if "/" in rest:
            return _error(404, "UnknownOperationException", "Unknown operation", rid)
        runtime, name = lookup(rest, areq.query)
        if runtime is None:
            return not_found(name, rid)
        spec = svc.specs[name]
        return Response(200, [("content-type", "application/json"), ("x-amzn-RequestId", rid)],
                        orjson.dumps({"Configuration": _configuration(spec),
                                      "Code": {"RepositoryType": "gwproxy", "Location": spec.code}}))

    return [("POST", PREFIX + "/*", invoke), ("GET", PREFIX + "*", get_function)]


async def _background_invoke(runtime, event, rid, client_context) -> None:
    """``Event`` invocations: AWS queues them and retries; here they wait for a slot like
    any other invocation and a throttled one is dropped (logged)."""
    try:
        await runtime.invoke(event, rid, client_context)
    except Throttled:
        import sys
        sys.stderr.write(f"[function {getattr(runtime, 'spec', None) and runtime.spec.name}] "
                         f"event invocation {rid} throttled and dropped\n")
    except Exception:
        pass
