"""``aws_proxy`` integration: the route's request becomes a payload 1.0 / 2.0 event for a
function, and the function's result becomes the response (API Gateway's Lambda proxy).

Two timeouts apply and whichever comes first decides: the function's own ``timeout`` (the
invocation fails: REST 502 / HTTP 500, like any function error) and the route's
integration ``timeout`` (504 ``{"message": "Endpoint request timed out"}``; the function
keeps running to its own end, as on AWS). Reserved concurrency exhausted after the bounded
wait: 429 ``{"message": "Too Many Requests"}``.
"""
from __future__ import annotations

import asyncio

from ..context import Response, answered, gateway_response, new_request_id
from .events import RouteConsts, event_v1, event_v2
from .invocation import Throttled
from .responses import function_error, to_response
from .spec import INIT_TIMEOUT


def _default_format(api: dict) -> str:
    return "1.0" if api.get("type", "rest") == "rest" else "2.0"


def check(cfg: dict, locator) -> list[str]:
    problems = []
    fns = cfg.get("functions") or {}
    for api_name, api in (cfg.get("apis") or {}).items():
        api_type = api.get("type", "rest")
        for i, route in enumerate(api.get("routes") or []):
            integ = route.get("integration") or {}
            if integ.get("type") != "aws_proxy":
                continue
            where = ("apis", api_name, "routes", i, "integration")
            name = integ.get("function")
            if name not in fns:
                known = ", ".join(repr(n) for n in fns) or "none are defined"
                problems.append(locator.problem(where + ("function",),
                                                f"no function named {name!r} (functions: {known})"))
            fmt = integ.get("payload_format") or _default_format(api)
            if api_type == "rest" and fmt != "1.0":
                problems.append(locator.problem(where + ("payload_format",),
                                                f"REST APIs send payload format '1.0' only, got {fmt!r}"))
            if api_type == "websocket":
                problems.append(locator.problem(where, "aws_proxy for websocket APIs is not supported yet"))
    return problems


def build_integration(rb):
    integ = rb.route["integration"]
    name = integ["function"]
    svc = rb.gateway.services.functions
    runtime = svc.get(name)
    spec = svc.specs[name]
    api_type = rb.api.get("type", "rest")
    fmt = integ.get("payload_format") or _default_format(rb.api)
    binary = tuple(rb.api.get("binary_media_types") or ())
    stage_vars = dict(rb.stage_variables)
    itimeout = float(integ.get("timeout") or 29.0)
    # the function always answers within its timeout (+ a cold start): no integration timer needed
    need_timer = itimeout < spec.timeout + INIT_TIMEOUT
    # this handler serves one API and stage: what the events take from those is worked
    # out from the first request and kept
    if fmt == "2.0":
        build, key = event_v2, rb.route_key
    else:
        build, key = event_v1, (rb.path if rb.method != "$default" else "/{proxy+}")
    consts = None

    throttled = ("Too Many Requests",)
    timeout_msg = "Endpoint request timed out"
    # a runtime that can answer without waiting (inline, sync handler on the loop) does,
    # without a coroutine; None when it has to wait. Not under an integration timer.
    invoke_now = None if need_timer else getattr(runtime, "invoke_now", None)

    def event_of(req, body):
        nonlocal consts
        c = consts
        if c is None:
            c = consts = RouteConsts.of(req)
        return build(req, body, binary, key, stage_vars, c)

    def answer(req, result):
        resp = to_response(result, fmt, api_type)
        resp.headers.append(("x-amzn-RequestId", req.request_id))
        return resp

    def aws_proxy(req):
        """A plain function: a request without a body to a runtime that can answer at once
        comes back as a decided answer (no coroutine); else the coroutine."""
        if invoke_now is None or req.has_body():
            return invoke(req)
        r = begin(req, b"")
        return answered(r) if type(r) is Response else r

    async def invoke(req):
        r = begin(req, await req.body() if req.has_body() else b"")
        return r if type(r) is Response else await r

    def begin(req, body):
        """The answer when it is decided without waiting (a Response: a bad event, or a
        runtime that answered at once), else the coroutine that waits for it."""
        try:
            event = event_of(req, body)
        except Exception:
            return function_error(api_type)
        rid = new_request_id()
        if invoke_now is not None:
            result = invoke_now(event, rid)
            if result is not None:
                return answer(req, result)
        return call(req, event, rid)

    async def call(req, event, rid):
        try:
            if need_timer:
                task = asyncio.ensure_future(runtime.invoke(event, rid))
                try:
                    result = await asyncio.wait_for(asyncio.shield(task), itimeout)
                except asyncio.TimeoutError:
                    task.add_done_callback(_consume)
                    return gateway_response(504, timeout_msg)
            else:
                result = await runtime.invoke(event, rid)
        except Throttled:
            return gateway_response(429, throttled[0])
        return answer(req, result)

    aws_proxy.__qualname__ = f"aws_proxy[{name}]"
    return aws_proxy


def _consume(task) -> None:
    if not task.cancelled():
        task.exception()
