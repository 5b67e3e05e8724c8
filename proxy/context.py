"""Per-request objects: the small flat Request context and the Response.

Config-time objects (compiled routes, stages, services) live in ``proxy.gateway``; these
are the only things created per request. Keep them flat and slotted.
"""
from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable

import orjson

import gwcore


class BodyTooLarge(Exception):
    """The request body passed the configured limit (answered with 413)."""


class Request:
    """What the pipeline stages see of one client request."""

    __slots__ = (
        "request_id", "method", "path", "query", "headers", "client_ip", "peer_ip",
        "scheme", "host", "http_version", "start_ns", "start_time",
        "api", "stage", "route", "path_params", "principal", "api_key", "auth_context",
        "max_body", "_proto", "_body", "_consumed", "extra",
    )

    def __init__(self, proto, method: str, path: str, query: str, headers: list,
                 client_ip: str, peer_ip: str, scheme: str, host: str, http_version: str,
                 request_id: str, start_ns: int, start_time: float, max_body: int):
        self._proto = proto
        self.method = method
        self.path = path              # raw (percent-encoded) path, as received
        self.query = query            # raw query string without "?"
        self.headers = headers        # list of (lower-case name, value) as received
        self.client_ip = client_ip    # resolved through trusted proxies
        self.peer_ip = peer_ip        # the socket peer
        self.scheme = scheme
        self.host = host
        self.http_version = http_version
        self.request_id = request_id
        self.start_ns = start_ns
        self.start_time = start_time
        self.max_body = max_body
        self.api = None               # CompiledApi
        self.stage = None             # CompiledStage
        self.route = None             # CompiledRoute
        self.path_params: dict = {}
        self.principal = None         # set by authorizers / API keys
        self.api_key = None           # name of the caller's API key, when one was presented and valid
        self.auth_context = None
        self._body: bytes | None = None
        self._consumed = False
        self.extra: dict | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        """First value of header ``name`` (lower-case)."""
        for k, v in self.headers:
            if k == name:
                return v
        return default

    def header_values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]

    def declared_length(self) -> int | None:
        v = self.header("content-length")
        if v is None:
            return None
        return int(v)  # validated in the app before the pipeline runs

    def has_body(self) -> bool:
        """Transfer-Encoding, or a first Content-Length other than 0 (one pass over the
        headers: this runs on every proxied and function request)."""
        cl = None
        for k, v in self.headers:
            if k == "transfer-encoding":
                return True
            if cl is None and k == "content-length":
                cl = v
        return cl is not None and int(cl) != 0  # validated in the app before the pipeline runs

    async def body(self) -> bytes:
        """The whole body, at most ``max_body`` bytes (else BodyTooLarge). Cached."""
        if self._body is not None:
            return self._body
        if self._consumed:
            raise RuntimeError("request body already streamed")
        if not self.has_body():
            self._body = b""
            return self._body
        cl = self.declared_length()
        if cl is not None and cl > self.max_body:
            raise BodyTooLarge()
        self._consumed = True
        parts = []
        size = 0
        async for chunk in self._proto:
            size += len(chunk)
            if size > self.max_body:
                raise BodyTooLarge()
            parts.append(chunk)
        self._body = b"".join(parts)
        return self._body

    def stream(self) -> AsyncIterator[bytes]:
        """Stream the body in chunks without holding it; enforces ``max_body``."""
        if self._body is not None:
            return _once(self._body)
        if self._consumed:
            raise RuntimeError("request body already streamed")
        self._consumed = True
        return _limited(self._proto, self.max_body)


async def _once(data: bytes):
    if data:
        yield data


async def _limited(proto, limit: int):
    size = 0
    async for chunk in proto:
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        if chunk:
            yield chunk


class Response:
    """A response from a stage or an integration.

    ``body`` is bytes; or ``stream`` is an async iterator of bytes (then ``body`` is
    ignored). ``on_close`` (optional) is awaited after the response was written, even on
    error: integrations use it to release upstream connections.
    """

    __slots__ = ("status", "headers", "body", "stream", "on_close", "meta")

    def __init__(self, status: int, headers: list | None = None, body: bytes = b"",
                 stream: AsyncIterator[bytes] | None = None, on_close=None):
        self.status = status
        self.headers = headers if headers is not None else []   # list of (name, value) str
        self.body = body
        self.stream = stream
        self.on_close = on_close
        self.meta: dict | None = None   # free-form notes for recording (cache hit, integration latency)


_JSON_CT = ("content-type", "application/json")


def gateway_response(status: int, message: str, headers: list | None = None) -> Response:
    """A gateway-generated answer with API Gateway's ``{"message": ...}`` body."""
    h = [_JSON_CT]
    if headers:
        h.extend(headers)
    r = Response(status, h, orjson.dumps({"message": message}))
    r.meta = {"gateway_error": True}
    return r


class Answered:
    """An already decided answer, as an awaitable (``await answered(resp)`` gives ``resp``).

    For a stage written as a plain function that returns the next stage's awaitable on the
    way through: it has no coroutine of its own to return an answer from. The app looks
    inside (``.resp``) instead of awaiting when it can answer at once."""

    __slots__ = ("resp",)

    def __init__(self, resp: Response):
        self.resp = resp

    def __await__(self):
        return self.resp
        yield  # a generator: awaiting it returns at once, without suspending


answered = Answered


#: a pipeline stage: answers, or calls the next handler and returns what it returns.
#: Either ``async def``, or a plain function returning an awaitable (``nxt(req)`` itself,
#: or ``answered(resp)``): the callers only await what they get.
Handler = Callable[[Request], Awaitable[Response]]
Stage = Callable[[Request, Handler], Awaitable[Response]]


#: a request id: a random version-4 UUID string (gwcore.reqid; reseeded in forked workers)
new_request_id = gwcore.load("reqid").new_request_id
