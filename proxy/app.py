"""The gateway application each worker runs: accept -> match -> route chain -> respond.

Two entries: ``serve_now`` for the native front end (gwcore.http1) and ``__rsgi__`` for
granian (RSGI); both build a Request and share everything after.

Under the native front end an answer that is ready without waiting (a mock, a cache hit,
a refusal, a 404) is written before ``serve_now`` returns, and a plain proxied request
without a body is sent upstream in callback mode and answered from the upstream
connection's ``data_received``: no coroutine, task or future on either way.

The lifecycle after matching (policy, auth, throttle, validate, cache, integrate) is the
per-route handler chain compiled in ``proxy.gateway``; this module does steps 1, 2 and 10.
"""
from __future__ import annotations

import ipaddress
import logging
import os
import sys
import time
import traceback
from typing import Awaitable

import gwcore

from .context import Answered, BodyTooLarge, Request, Response, answered, gateway_response, new_request_id
from .gateway import Gateway

log = logging.getLogger("gwproxy")

_lane_mod = gwcore.load("lane")
_Lane = _lane_mod.Lane
_Plan = _lane_mod.Plan
LANES_MAX = _lane_mod.LANES_MAX
_lane_key = gwcore.load("h1scan").lane_key
_router_mod = gwcore.load("router")
MATCH = _router_mod.MATCH
NOT_FOUND = _router_mod.NOT_FOUND
METHOD_NOT_ALLOWED = _router_mod.METHOD_NOT_ALLOWED
BAD_PATH = _router_mod.BAD_PATH

_perf_ns = time.perf_counter_ns
_time = time.time


_PEERS: dict[str, str] = {}


def _split_peer(client: str) -> str:
    """granian gives "ip:port" (IPv6 as "[::1]:port" or "::1:port").

    Memoized: a keep-alive connection sends the same string for every request, and the
    split was ~5% of the gateway's own per-request Python time. Bounded: cleared when full.
    """
    peer = _PEERS.get(client)
    if peer is not None:
        return peer
    peer = _split_peer_uncached(client)
    if len(_PEERS) >= 4096:
        _PEERS.clear()
    _PEERS[client] = peer
    return peer


def _split_peer_uncached(client: str) -> str:
    if not client:
        return ""
    if client.startswith("["):
        return client[1:client.index("]")]
    host, sep, port = client.rpartition(":")
    if sep and port.isdigit():
        return host or client
    return client


def _wall_at(start_ns: int) -> float:
    """The wall-clock time at ``start_ns`` (a perf_counter_ns reading taken earlier)."""
    return _time() - (_perf_ns() - start_ns) / 1e9


def _clean_target(text: str) -> bool:
    """No whitespace or control characters (what may go into a request line or a header
    value as it is)."""
    return bool(text) and text.isprintable() and " " not in text


class TrustedProxies:
    """Resolve the client address from X-Forwarded-For, believing only configured hops."""

    def __init__(self, cidrs):
        self.nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]

    def trusted(self, ip: str) -> bool:
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return any(a in n for n in self.nets)

    def resolve(self, peer: str, xff: str | None) -> str:
        if not xff or not self.trusted(peer):
            return peer
        hops = [h.strip() for h in xff.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self.trusted(hop):
                try:
                    ipaddress.ip_address(hop)
                except ValueError:
                    return peer
                return hop
        return hops[0] if hops else peer


def _failed(req: Request, e: Exception) -> Response:
    """The answer for a request whose handling raised ``e`` (logged unless expected)."""
    if isinstance(e, BodyTooLarge):
        return gateway_response(413, "Request Entity Too Large")
    log.error("request %s failed:\n%s", req.request_id,
              "".join(traceback.format_exception(type(e), e, e.__traceback__)))
    return gateway_response(500, "Internal server error")


class GatewayApp:
    """RSGI application object (``__rsgi__``, ``__rsgi_init__``, ``__rsgi_del__``)."""

    def __init__(self, gateway: Gateway):
        self.gw = gateway
        srv = gateway.server
        self.rid_header = srv.get("request_id_header", "x-request-id").lower()
        self.max_body = int(srv.get("max_body_bytes", 10 * 1024 * 1024))
        tp = srv.get("trusted_proxies") or []
        self.trusted = TrustedProxies(tp) if tp else None
        self.access_log = bool(srv.get("access_log", False))
        self._log_buf: list[str] = []
        self.admin = None
        self.raw_paths = False    # True under the native front end (RSGI paths are decoded)
        gateway.reply = self._reply   # how callbacks answer what serve_now left pending
        #: forwarding lanes (gwcore.lane) by h1scan.lane_key(method, raw path, Host), for the
        #: native front end (its scanner looks them up from the raw request head)
        self.lanes: dict = {}

    # -- lifecycle -----------------------------------------------------------------
    def __rsgi_init__(self, loop):
        loop.run_until_complete(self.gw.start())
        admin_addr = self.gw.server.get("admin")
        if admin_addr:
            from .admin import start_admin
            self.admin = loop.run_until_complete(start_admin(self.gw, admin_addr))
        if self.access_log:
            loop.call_later(1.0, self._flush_log, loop)

    def __rsgi_del__(self, loop):
        if self.admin is not None:
            self.admin.close()
        self._flush_log(None)
        try:
            loop.run_until_complete(self.gw.close())
        except Exception:
            pass

    def _flush_log(self, loop):
        if self._log_buf:
            buf, self._log_buf = self._log_buf, []
            sys.stdout.write("".join(buf))
            sys.stdout.flush()
        if loop is not None:
            loop.call_later(1.0, self._flush_log, loop)

    # -- the request path ------------------------------------------------------------
    async def __rsgi__(self, scope, proto):
        """granian's entry: adapt its scope to a Request."""
        if scope.proto != "http":
            proto.close(1000) if hasattr(proto, "close") else None
            return
        start_ns = _perf_ns()
        peer = _split_peer(scope.client)
        client = peer
        if self.trusted is not None:
            client = self.trusted.resolve(peer, scope.headers.get("x-forwarded-for"))
        host = scope.authority or scope.headers.get("host") or ""
        req = Request(proto, scope.method, scope.path, scope.query_string, scope.headers.items(),
                      client, peer, scope.scheme, host, scope.http_version, new_request_id(),
                      start_ns, _time(), self.max_body)
        await self.serve(proto, req)

    def serve_now(self, ex, peer: str):
        """The native front end's entry (gwcore.http1.Exchange). Returns None when ``ex`` was
        answered here and now; True when it will be from a callback (``ex.complete()``, or
        ``ex.continue_with()`` for an answer that must be awaited after all: the integration
        calls ``gateway.reply``, which is :meth:`_reply`); else the coroutine for the
        connection's task to await."""
        req = self._request(ex, peer, new_request_id(), _perf_ns(), _time())
        try:
            r = self._route(req)
            if type(r) is not Response:
                if r.lane is not None:
                    self._add_lane(ex, r, req.path_params)
                start = r.start
                if start is not None:
                    r = start(req)
                    if r is True:
                        return True          # answered from the upstream's callback
                else:
                    r = r.handler(req)
                if type(r) is Answered:
                    r = r.resp
                else:
                    return self.serve(ex, req, r)
        except Exception as e:
            r = _failed(req, e)
        if r.stream is None and r.on_close is None:
            self._respond_now(ex, req, r)
            return None
        return self.respond(ex, req, r)

    # -- forwarding lanes (gwcore.lane) --------------------------------------------------
    def _add_lane(self, ex, route, params: dict) -> None:
        """Remember that ``ex``'s Host, method and path go to ``route`` (a planned one): the
        front end forwards the next such requests through the lane. (A request that comes
        here although its lane exists was handed back by it: nothing to add then.)"""
        key = _lane_key(ex.method, ex.path, ex.host)     # (both front-end paths give latin-1 str)
        lanes = self.lanes
        if key in lanes:
            return
        spec = route.lane
        target = spec.target(params)
        if not _clean_target(target + spec.fixed_query) or not _clean_target(spec.host_header):
            # h1client's encode_head refuses these on the app's path: a lane writes its heads
            # without it, so such a route keeps the app's path (and its answer)
            return
        plan = route.plan
        if plan is None:
            plan = route.plan = _Plan(
                spec.pool_of, route.lane_checks, spec.timeout, spec.host_header, spec.pass_host,
                spec.fwd_port, spec.fixed_query, self.rid_header, spec.start, spec.on_upstream,
                self._lane_request, self.serve, self._lane_log if self.access_log else None)
        if len(lanes) >= LANES_MAX:
            lanes.clear()
        lanes[key] = _Lane(plan, target, ex.method, ex.path, ex.host)

    def _lane_request(self, ex, peer: str, rid: str, start_ns: int) -> Request:
        """The routed Request for a request a lane hands back to the app's path."""
        req = self._request(ex, peer, rid, start_ns, _wall_at(start_ns))
        r = self._route(req)
        if type(r) is Response:     # pragma: no cover - the lane's triple routed here before
            raise RuntimeError("a forwarding lane's request no longer routes")
        return req

    def _request(self, ex, peer: str, rid: str, start_ns: int, start_time: float) -> Request:
        if ex.raw is not None:
            ex.unpack()             # a lane's request: its query and headers are read now
        client = peer
        headers = ex.headers
        if self.trusted is not None:
            xff = None
            for k, v in headers:
                if k == "x-forwarded-for":
                    xff = v
                    break
            client = self.trusted.resolve(peer, xff)
        return Request(ex, ex.method, ex.path, ex.query, headers, client, peer, "http", ex.host,
                       ex.http_version, rid, start_ns, start_time, self.max_body)

    def _lane_log(self, ex, peer: str, status: int, rid: str, start_ns: int) -> None:
        self._log(self._request(ex, peer, rid, start_ns, _wall_at(start_ns)), status)

    def _reply(self, req: Request, r) -> None:
        """A callback's answer for a request ``serve_now`` left pending: a Response, or an
        awaitable giving one."""
        ex = req._proto
        if type(r) is Response and r.stream is None and r.on_close is None:
            try:
                self._respond_now(ex, req, r)
            except Exception as e:
                _failed(req, e)     # logged; the front end answers 500 if nothing was sent
            ex.complete()
            return
        ex.continue_with(self.respond(ex, req, r) if type(r) is Response else self.serve(ex, req, r))

    async def serve(self, proto, req: Request, aw=None):
        try:
            resp = await (self.handle(req) if aw is None else aw)
        except Exception as e:
            resp = _failed(req, e)
        if resp.stream is None and resp.on_close is None:
            self._respond_now(proto, req, resp)
        else:
            await self.respond(proto, req, resp)

    def handle(self, req: Request) -> Awaitable[Response]:
        """The route's handler coroutine, or an already decided answer (awaitable either way)."""
        r = self._route(req)
        if type(r) is Response:
            return answered(r)
        return r.handler(req)

    def _route(self, req: Request):
        """The matched route (req.api, .stage, .route and .path_params set), or the Response
        that answers the request without one (bad framing, no such API, stage or route)."""
        cl = req.header("content-length")
        if cl is not None:
            if not cl.isdigit():
                return gateway_response(400, "Bad Request")
            if int(cl) > self.max_body:
                return gateway_response(413, "Request Entity Too Large")
        api, stage, rest = self.gw.resolve(req.host, req.path)
        if stage is None:
            return self._not_found(api, req)
        req.api = stage.api
        req.stage = stage
        # granian hands over the already percent-decoded path (RSGI has no raw path), and the
        # router decodes once more: escape "%" so that it decodes to exactly this path again.
        # The native front end gives the raw path, which the router decodes exactly once.
        if "%" in rest and not self.raw_paths:
            rest = rest.replace("%", "%25")
        status, route, params = stage.router.match(req.method, rest)
        if status != MATCH:
            if status == BAD_PATH and (api.gate is None or api.gate(req.client_ip)):
                return gateway_response(400, "Bad Request")
            return self._not_found(api, req)
        req.route = route
        req.path_params = params
        return route

    @staticmethod
    def _not_found(api, req):
        if api is not None and api.gate is not None and not api.gate(req.client_ip):
            # a client the API refuses gets the same answer for every path
            return gateway_response(403, "Forbidden")
        if api is not None and api.type == "http":
            return gateway_response(404, "Not Found")
        return gateway_response(403, "Missing Authentication Token")

    def _respond_now(self, proto, req: Request, resp: Response) -> None:
        """A whole (not streamed) response, written now (and its access log line)."""
        headers = resp.headers
        headers.append((self.rid_header, req.request_id))
        status = resp.status
        if status == 204 or status == 304 or (req.method == "HEAD" and not resp.body):
            # a proxied HEAD answer carries the upstream's content-length header
            proto.response_empty(status, headers)
        else:
            # HEAD: the front end sends the head only, with the body's length
            proto.response_bytes(status, headers, resp.body)
        if self.access_log:
            self._log(req, status)

    def _log(self, req: Request, status: int) -> None:
        """One access log line (buffered, written once a second)."""
        dur = (_perf_ns() - req.start_ns) / 1e6
        self._log_buf.append(
            f'{req.client_ip} - [{time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(req.start_time))}] '
            f'"{req.method} {req.path}{"?" + req.query if req.query else ""} HTTP/{req.http_version}" '
            f'{status} {req.request_id} {dur:.3f}ms\n')

    async def respond(self, proto, req: Request, resp: Response) -> None:
        headers = resp.headers
        status = resp.status
        try:
            if resp.stream is None:
                self._respond_now(proto, req, resp)
            else:
                headers.append((self.rid_header, req.request_id))
                await self._stream(proto, req, resp, headers)
        finally:
            if resp.on_close is not None:
                try:
                    await resp.on_close()
                except Exception:
                    pass
        if self.access_log and resp.stream is not None:   # whole ones were logged when written
            self._log(req, status)

    async def _stream(self, proto, req, resp, headers):
        stream = resp.stream
        if req.method == "HEAD" or resp.status in (204, 304):
            proto.response_empty(resp.status, headers)
            return
        try:
            first = await stream.__anext__()
        except StopAsyncIteration:
            proto.response_bytes(resp.status, headers, b"")
            return
        except Exception:
            log.warning("request %s: upstream failed before the body", req.request_id)
            r = gateway_response(502, "Bad Gateway")
            r.headers.append((self.rid_header, req.request_id))
            proto.response_bytes(502, r.headers, r.body)
            return
        transport = proto.response_stream(resp.status, headers)
        try:
            await transport.send_bytes(first)
            async for chunk in stream:
                await transport.send_bytes(chunk)
        except Exception:
            # response bytes already reached the client: all we can do is cut the stream
            log.warning("request %s: stream aborted", req.request_id)
            raise


def create_app() -> GatewayApp:
    """Build the gateway from $GWPROXY_CONFIG in this worker (granian's factory; the native
    supervisor calls it too)."""
    from .gateway import load_gateway
    logging.basicConfig(level=os.environ.get("GWPROXY_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = os.environ["GWPROXY_CONFIG"]
    return GatewayApp(load_gateway(path))
