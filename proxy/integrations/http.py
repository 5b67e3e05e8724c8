"""`http_proxy` / `http` integrations: forward to an HTTP upstream through the pool.

Everything that can be decided per route is decided here at config time: the URI
template (stage variables substituted), the pool, the fixed headers. Per request we only
render path parameters, strip hop-by-hop headers, add X-Forwarded-*, and stream.

`http` is handled like `http_proxy` (request and response passed through); mapping
templates are not supported yet.
"""
from __future__ import annotations

import logging
import os
import re
from urllib.parse import quote, urlsplit

from ..context import Response, gateway_response
from ..headers import outgoing_headers
from ..upstream.errors import UpstreamError, UpstreamTimeout

#: bodies up to this size are read whole and sent in one write; larger ones stream
SMALL_BODY = 64 * 1024
#: upstream responses up to this size (with a Content-Length) are read whole
SMALL_RESPONSE = 256 * 1024

log = logging.getLogger("gwproxy")

_STAGEVAR = re.compile(r"\$\{stageVariables\.([A-Za-z0-9_]+)\}")
_PARAM = re.compile(r"\{([A-Za-z0-9_.\-]+)(\+?)\}")


def substitute_stage_variables(text: str, variables: dict) -> str:
    return _STAGEVAR.sub(lambda m: str(variables.get(m.group(1), "")), text)


def check(cfg, locator) -> list[str]:
    problems = []
    for api_name, api in (cfg.get("apis") or {}).items():
        for i, route in enumerate(api.get("routes") or []):
            integ = route.get("integration") or {}
            if integ.get("type") not in ("http_proxy", "http"):
                continue
            where = ("apis", api_name, "routes", i, "integration", "uri")
            uri = _STAGEVAR.sub("x", integ.get("uri", ""))
            parts = urlsplit(uri)
            if parts.scheme != "http":
                problems.append(locator.problem(where, f"expected an http:// URI, got {integ.get('uri')!r}"
                                                + (" (https upstreams are not supported yet)" if parts.scheme == "https" else "")))
                continue
            if not parts.hostname:
                problems.append(locator.problem(where, f"URI has no host: {integ.get('uri')!r}"))
                continue
            if "{" in (parts.netloc or ""):
                problems.append(locator.problem(where, "path parameters are not allowed in the URI host"))
            try:
                parts.port
            except ValueError:
                problems.append(locator.problem(where, f"bad port in URI {integ.get('uri')!r}"))
            names = set(re.findall(r"\{([A-Za-z0-9_.\-]+)\+?\}", route.get("route", "")))
            for m in _PARAM.finditer(parts.path + "?" + parts.query):
                n = m.group(1)
                if n not in names and not (n == "proxy" and any(s.endswith("+}") for s in route.get("route", "").split("/"))):
                    problems.append(locator.problem(where, f"URI uses {{{n}}} but the route has no such path parameter"))
    return problems


def _compile_template(path: str, greedy_name: str | None):
    """A list of literal strings and (name, greedy) parameter references."""
    parts = []
    pos = 0
    for m in _PARAM.finditer(path):
        if m.start() > pos:
            parts.append(path[pos:m.start()])
        name = m.group(1)
        greedy = bool(m.group(2)) or (name == "proxy" and greedy_name is not None)
        if name == "proxy" and greedy_name is not None:
            name = greedy_name
        parts.append((name, greedy))
        pos = m.end()
    if pos < len(path):
        parts.append(path[pos:])
    if all(isinstance(p, str) for p in parts):
        return "".join(parts)
    return tuple(parts)


def _render(template, params: dict) -> str:
    if isinstance(template, str):
        return template
    out = []
    for p in template:
        if isinstance(p, str):
            out.append(p)
        else:
            v = params.get(p[0], "")
            if v and not (v.isascii() and v.isalnum()):   # the common case needs no quoting
                v = quote(v, safe="/" if p[1] else "")
            out.append(v)
    return "".join(out)


def build_integration(rb):
    integ = rb.route["integration"]
    uri = substitute_stage_variables(integ["uri"], rb.stage_variables)
    parts = urlsplit(uri)
    host = parts.hostname
    port = parts.port or 80
    greedy_name = None
    for seg in rb.path.split("/"):
        if seg.startswith("{") and seg.endswith("+}"):
            greedy_name = seg[1:-2]
    template = _compile_template(parts.path or "/", greedy_name)
    fixed_query = parts.query
    pass_host = bool(integ.get("pass_host", False))
    host_header = host if port == 80 else f"{host}:{port}"
    timeout = float(integ.get("timeout", 29.0))
    gw = rb.gateway
    fwd_port = os.environ.get("GWPROXY_LISTEN", ":80").rsplit(":", 1)[-1]
    if integ.get("vpc_link"):
        # decided here, once: link routes get their own handler, plain ones stay as they are
        return _link_integration(gw, gw.services.links.get(integ["vpc_link"]), template,
                                 fixed_query, pass_host, host_header, timeout, fwd_port)
    pool_ref = []

    def get_pool():
        if not pool_ref:
            pool_ref.append(gw.services.upstreams.pool(host, port))
        return pool_ref[0]

    async def send(req, target, headers, fresh=False):
        if req.has_body():
            body, length = await _request_body(req)
        else:
            body = length = None
        try:
            resp = await get_pool().request(req.method, target, headers, body, timeout=timeout,
                                            body_length=length, fresh=fresh)
        except UpstreamTimeout:
            return gateway_response(504, "Endpoint request timed out")
        except UpstreamError:
            return gateway_response(502, "Bad Gateway")
        done = _relay_done(req, resp)
        if done is not None:
            return done
        return await _relay(req, resp, resp.aclose)

    def http_proxy(req):
        target, headers = _outgoing(req, template, fixed_query, pass_host, host_header, fwd_port)
        return send(req, target, headers)

    def start(req):
        """The native front end's fast path: a request without a body goes out on an idle
        keep-alive connection in callback mode and ``gw.reply(req, answer)`` is called from
        the upstream connection's data_received. True then; else the awaitable answer (a
        body to send, or no idle connection at hand)."""
        if req.has_body():
            return http_proxy(req)
        target, headers = _outgoing(req, template, fixed_query, pass_host, host_header, fwd_port)
        if get_pool().start(req.method, target, headers, timeout, on_upstream, req):
            return True
        return send(req, target, headers)

    def on_upstream(req, resp, exc, retry):
        try:
            if resp is not None:
                done = _relay_done(req, resp)
                answer = done if done is not None else _relay(req, resp, resp.aclose)
            elif retry:     # a stale keep-alive connection: once more on a new one
                target, headers = _outgoing(req, template, fixed_query, pass_host, host_header,
                                            fwd_port)
                answer = send(req, target, headers, True)
            elif isinstance(exc, UpstreamTimeout):
                answer = gateway_response(504, "Endpoint request timed out")
            else:
                answer = gateway_response(502, "Bad Gateway")
        except Exception:   # never into the upstream connection's protocol callbacks
            log.exception("request %s: upstream answer failed", req.request_id)
            answer = gateway_response(502, "Bad Gateway")
        gw.reply(req, answer)

    http_proxy.start = start
    # what a forwarding lane (gwcore.lane) needs of this route; the app makes the Plan
    http_proxy.lane = LaneSpec(get_pool, template, timeout, host_header, pass_host, fwd_port,
                               fixed_query, start, on_upstream)
    return http_proxy


class LaneSpec:
    """The integration's part of a forwarding lane: how to reach the upstream, and its own
    entries for what the lane hands back (see gwcore.lane)."""

    __slots__ = ("pool_of", "template", "timeout", "host_header", "pass_host", "fwd_port",
                 "fixed_query", "start", "on_upstream")

    def __init__(self, pool_of, template, timeout, host_header, pass_host, fwd_port,
                 fixed_query, start, on_upstream):
        self.pool_of = pool_of
        self.template = template
        self.timeout = timeout
        self.host_header = host_header
        self.pass_host = pass_host
        self.fwd_port = fwd_port
        self.fixed_query = fixed_query
        self.start = start
        self.on_upstream = on_upstream

    def target(self, params: dict) -> str:
        """The upstream path for a request's path parameters."""
        return _render(self.template, params)


def _outgoing(req, template, fixed_query, pass_host, host_header, fwd_port):
    """The upstream request target and headers: path parameters rendered, query passed
    intact, hop-by-hop headers stripped, then X-Forwarded-* and Host set."""
    path = _render(template, req.path_params)
    q = req.query
    if fixed_query:
        q = fixed_query + "&" + q if q else fixed_query
    target = path + "?" + q if q else path
    headers = outgoing_headers(req.headers, req.host if pass_host and req.host else host_header,
                               req.peer_ip, req.scheme, fwd_port)
    return target, headers


async def _request_body(req):
    """(body, length) of a request that has a body (``req.has_body()``): small bodies whole
    (one write upstream), larger ones streamed."""
    cl = req.declared_length()
    if cl is not None and cl <= SMALL_BODY:
        return await req.body(), None
    return req.stream(), cl


def _relay_done(req, resp):
    """The client response when the upstream's has already arrived whole (a small body that
    came with the head: the connection is back in the pool, nothing to await); else None."""
    if resp.has_body() and req.method != "HEAD" and resp.content_length is not None \
            and resp.content_length <= SMALL_RESPONSE:
        data = resp.body_now()
        if data is not None:
            return Response(resp.status, resp.forward_headers(), data)
    return None


async def _relay(req, resp, close):
    """The client response for an upstream response; ``close`` releases the upstream."""
    out_headers = resp.forward_headers()
    if not resp.has_body() or req.method == "HEAD":
        await close()
        if req.method == "HEAD" and resp.content_length is not None and resp.status not in (204, 304):
            # what a GET would get: the front end passes it on for HEAD answers
            out_headers.append(("content-length", str(resp.content_length)))
        return Response(resp.status, out_headers, b"")
    if resp.content_length is not None and resp.content_length <= SMALL_RESPONSE:
        try:
            data = await resp.read()
        except UpstreamTimeout:
            return gateway_response(504, "Endpoint request timed out")
        except UpstreamError:
            return gateway_response(502, "Bad Gateway")
        finally:
            await close()
        return Response(resp.status, out_headers, data)
    if resp.content_length is not None:
        # keep the length: if the upstream dies mid-body, the front end cuts the
        # connection short and the client sees the truncation (under granian too, whose
        # RSGI streams cannot be aborted)
        out_headers.append(("content-length", str(resp.content_length)))
    return Response(resp.status, out_headers, stream=resp.__aiter__(), on_close=close)


def _link_integration(gw, link, template, fixed_query, pass_host, host_header, timeout, fwd_port):
    """The ``vpc_link:`` variant: the link picks the target (balancing, health, retries)."""
    from ..upstream.links import NoTarget, service_unavailable

    request = link.request
    done = link.done

    def vpc_link_proxy(req):
        target, headers = _outgoing(req, template, fixed_query, pass_host, host_header, fwd_port)
        return send(req, target, headers)

    async def send(req, target, headers):
        if req.has_body():
            body, length = await _request_body(req)
        else:
            body = length = None
        return await finish(req, request(req.method, target, headers, body, length, timeout))

    async def finish(req, pending):
        """The answer once ``pending`` (the link's request) gives (response, target)."""
        try:
            resp, t = await pending
        except NoTarget as e:
            return service_unavailable(e.retry_after)
        except UpstreamTimeout:
            return gateway_response(504, "Endpoint request timed out")
        except UpstreamError as e:
            if e.kind.startswith("connect"):   # nothing reached any target: unavailable
                return service_unavailable(link.retry_after())
            return gateway_response(502, "Bad Gateway")
        answer = relay(req, resp, t)
        return answer if type(answer) is Response else await answer

    def relay(req, resp, t):
        """A Response when the upstream's arrived whole, else the coroutine relaying it."""
        whole = _relay_done(req, resp)
        if whole is not None:
            done(t)
            return whole

        async def close():
            try:
                await resp.aclose()
            finally:
                done(t)
        return _relay(req, resp, close)

    def start(req):
        """The callback-mode entry, as for plain routes (see build_integration)."""
        if req.has_body():
            return vpc_link_proxy(req)
        target, headers = _outgoing(req, template, fixed_query, pass_host, host_header, fwd_port)
        sent = link.begin(req.method, target, headers, timeout, on_upstream, req)
        if sent is True:
            return True
        return finish(req, request(req.method, target, headers, None, None, timeout, sent))

    def on_upstream(req, resp, t, pending):
        try:
            answer = finish(req, pending) if resp is None else relay(req, resp, t)
        except Exception:   # never into the upstream connection's protocol callbacks
            log.exception("request %s: upstream answer failed", req.request_id)
            answer = gateway_response(502, "Bad Gateway")
        gw.reply(req, answer)

    vpc_link_proxy.start = start
    return vpc_link_proxy
