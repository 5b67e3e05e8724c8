"""The admin listener: a small HTTP/1.1 server for operators (off unless ``server.admin``).

It runs on the event loop of one gateway worker (the first to bind the address), so it
sees that worker's services. Built-in endpoints: ``GET /healthz``, ``GET /config`` (a
summary of the loaded config and the route table), ``GET /upstreams``. Feature modules add
theirs through ``admin_routes(gateway)`` (see ``proxy.pipeline``).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
from urllib.parse import unquote

import httptools
import orjson

import gwcore

from . import __version__
from .context import Response, gateway_response

log = logging.getLogger("gwproxy.admin")

_REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
            403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
            413: "Payload Too Large", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}

MAX_ADMIN_BODY = 8 * 1024 * 1024


class AdminRequest:
    __slots__ = ("method", "path", "query", "headers", "body", "gateway", "params")

    def __init__(self, method, path, query, headers, body, gateway):
        self.method = method
        self.path = path          # decoded path
        self.query = query        # raw query string
        self.headers = headers    # dict, lower-case names
        self.body = body
        self.gateway = gateway
        self.params: dict = {}


def json_response(obj, status: int = 200, headers: list | None = None) -> Response:
    return Response(status, [("content-type", "application/json")] + (headers or []),
                    orjson.dumps(obj, option=orjson.OPT_INDENT_2 if status == 200 else 0))


def route_table(gateway) -> list[dict]:
    rows = []
    for api in gateway.apis:
        stages = list(api.stages.values()) + ([api.default_stage] if api.default_stage else [])
        for st in stages:
            for method, path, cr in st.router.routes():
                integ = cr.cfg["integration"]
                target = integ.get("uri") or integ.get("function") or integ.get("type")
                rows.append({"api": api.name, "type": api.type, "stage": st.name,
                             "method": method, "path": path,
                             "url": (api.base_path + st.prefix + path) or "/",
                             "integration": integ["type"], "target": target})
    return rows


async def _healthz(areq):
    return json_response({"status": "ok"})


async def _config(areq):
    gw = areq.gateway
    return json_response({
        "version": __version__,
        "gwcore": gwcore.implementation(),
        "config": gw.locator.file,
        "apis": {a.name: {"type": a.type, "host": a.host, "base_path": a.base_path,
                          "stages": sorted(list(a.stages) + (["$default"] if a.default_stage else []))}
                 for a in gw.apis},
        "routes": route_table(gw),
    })


async def _upstreams(areq):
    ups = getattr(areq.gateway.services, "upstreams", None)
    return json_response(ups.stats() if ups is not None else {})


BUILTIN = [("GET", "/healthz", _healthz), ("GET", "/config", _config), ("GET", "/upstreams", _upstreams)]


class AdminRouter:
    def __init__(self, gateway):
        self.gateway = gateway
        self.exact: dict = {}
        self.prefix: list = []
        for method, path, handler in BUILTIN + list(gateway.admin_routes):
            if path.endswith("*"):
                self.prefix.append((method, path[:-1], handler))
            else:
                self.exact[(method, path)] = handler
        self.prefix.sort(key=lambda t: -len(t[1]))

    async def dispatch(self, areq: AdminRequest) -> Response:
        h = self.exact.get((areq.method, areq.path))
        if h is None:
            known = any(p == areq.path for (_, p) in self.exact)
            for method, pfx, handler in self.prefix:
                if areq.path.startswith(pfx):
                    if method == areq.method or method == "ANY":
                        h = handler
                        break
                    known = True
            if h is None:
                return gateway_response(405 if known else 404,
                                        "Method Not Allowed" if known else "Not Found")
        try:
            return await h(areq)
        except Exception:
            log.exception("admin %s %s failed", areq.method, areq.path)
            return gateway_response(500, "Internal server error")


class _AdminProtocol(asyncio.Protocol):
    def __init__(self, router: AdminRouter):
        self.router = router
        self.transport = None
        self.parser = httptools.HttpRequestParser(self)
        self._reset()
        self.tasks: set = set()

    def _reset(self):
        self.url = b""
        self.headers = {}
        self.body = []
        self.size = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._send(gateway_response(400, "Bad Request"), close=True)
        except httptools.HttpParserError:
            self._send(gateway_response(400, "Bad Request"), close=True)

    def on_url(self, url):
        self.url += url

    def on_header(self, name, value):
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body):
        self.size += len(body)
        if self.size > MAX_ADMIN_BODY:
            self._send(gateway_response(413, "Request Entity Too Large"), close=True)
            return
        self.body.append(body)

    def on_message_complete(self):
        if self.transport is None or self.transport.is_closing():
            return
        u = httptools.parse_url(self.url)
        areq = AdminRequest(self.parser.get_method().decode(), unquote(u.path.decode("latin-1")),
                            (u.query or b"").decode("latin-1"), self.headers, b"".join(self.body),
                            self.router.gateway)
        keep = self.parser.should_keep_alive()
        self._reset()
        t = asyncio.get_running_loop().create_task(self._run(areq, keep))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _run(self, areq, keep):
        resp = await self.router.dispatch(areq)
        if resp.stream is not None:
            parts = [c async for c in resp.stream]
            resp.body = b"".join(parts)
        self._send(resp, close=not keep)

    def _send(self, resp: Response, close: bool):
        if self.transport is None or self.transport.is_closing():
            return
        body = resp.body or b""
        lines = [f"HTTP/1.1 {resp.status} {_REASONS.get(resp.status, 'Unknown')}"]
        for k, v in resp.headers:
            lines.append(f"{k}: {v}")
        lines.append(f"content-length: {len(body)}")
        if close:
            lines.append("connection: close")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        if close:
            self.transport.close()


def parse_listen(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


async def start_admin(gateway, addr: str):
    """Bind the admin listener unless another worker of this node already did.

    Under the native front end the supervisor numbers its workers (GWPROXY_WORKER_INDEX):
    worker 0 holds the admin listener, with SO_REUSEPORT so that during a reload the new
    worker 0 binds it while the old one is still draining. Under granian the first worker
    to bind it wins."""
    index = os.environ.get("GWPROXY_WORKER_INDEX")
    if index is not None and index != "0":
        return None
    host, port = parse_listen(addr)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(fam, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if index is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            return None
        raise
    sock.listen(128)
    router = AdminRouter(gateway)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _AdminProtocol(router), sock=sock)
    log.info("admin listener on %s:%d", host, port)
    return server
