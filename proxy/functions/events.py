"""API Gateway's proxy events, payload format 1.0 (REST, and HTTP APIs on request) and 2.0
(HTTP APIs), built from a :class:`proxy.context.Request`.

Where AWS's behaviour depends on its own infrastructure, we use the closest local fact:
``apiId`` is the API's ``id`` setting (default: its name), ``domainName`` is the Host the
client used, ``accountId`` is a fixed dummy. Header names reach us lower-case (HTTP/2
style) so 1.0 events carry lower-case names too; every Lambda library reads them
case-insensitively.
"""
from __future__ import annotations

import base64
import time
from urllib.parse import unquote

from .spec import ACCOUNT_ID

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

#: content types an HTTP API passes as text when no binary media types are configured
_TEXT_SUFFIXES = ("json", "xml", "javascript", "x-www-form-urlencoded", "yaml", "csv", "html", "plain")


_last_time = (-1, "")     # (whole second, its request_time): requests come many per second


def request_time(t: float) -> str:
    global _last_time
    sec = int(t) if t >= 0 else None
    last = _last_time
    if sec == last[0]:
        return last[1]
    g = time.gmtime(t)
    text = f"{g.tm_mday:02d}/{_MONTHS[g.tm_mon - 1]}/{g.tm_year}:{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000"
    if sec is not None:
        _last_time = (sec, text)
    return text


def parse_query(qs: str) -> list[tuple[str, str]]:
    """(name, value) pairs, percent-decoded; '+' is kept (API Gateway does not turn it into
    a space)."""
    out: list[tuple[str, str]] = []
    if not qs:
        return out
    for part in qs.split("&"):
        if not part:
            continue
        k, sep, v = part.partition("=")
        out.append((unquote(k), unquote(v)))
    return out


def _media_match(ctype: str, patterns) -> bool:
    ct = ctype.split(";", 1)[0].strip().lower()
    if not ct:
        return False
    for p in patterns:
        p = p.lower()
        if p == "*/*" or p == ct:
            return True
        if p.endswith("/*") and ct.startswith(p[:-1]):
            return True
    return False


def encode_body(body: bytes, ctype: str | None, api_type: str, binary_types) -> tuple[str | None, bool]:
    """(body string or None, isBase64Encoded) by the API's binary media types.

    REST: base64 exactly when the Content-Type matches ``binary_media_types``. HTTP APIs:
    also when the body is not text (a non-text content type, or not UTF-8).
    """
    if not body:
        return None, False
    ct = ctype or ""
    if binary_types and _media_match(ct, binary_types):
        return base64.b64encode(body).decode("ascii"), True
    if api_type == "http":
        main = ct.split(";", 1)[0].strip().lower()
        texty = (not main or main.startswith("text/") or main.endswith(_TEXT_SUFFIXES)
                 or "+json" in main or "+xml" in main)
        if texty:
            try:
                return body.decode("utf-8"), False
            except UnicodeDecodeError:
                pass
        return base64.b64encode(body).decode("ascii"), True
    return body.decode("utf-8", "replace"), False


def _cut(req) -> int:
    """How much of the request path is base path and stage prefix (REST's ``path`` is the
    rest, or "/")."""
    return len(getattr(req.api, "base_path", "") or "") + len(getattr(req.stage, "prefix", "") or "")


def _api_id(req) -> str:
    cfg = getattr(req.api, "cfg", None) or {}
    return str(cfg.get("id") or getattr(req.api, "name", "api"))


_DOMAINS: dict = {}     # Host -> (domainName, domainPrefix); bounded
_DOMAINS_MAX = 256


def _domain(req, api_id: str = "") -> tuple[str, str]:
    h = req.host
    if h:
        got = _DOMAINS.get(h)
        if got is not None:
            return got
    host = (h or "").split(":", 1)[0] or req.header("host", "") or "localhost"
    host = host.split(":", 1)[0]
    got = host, host.split(".", 1)[0]
    if h and h.split(":", 1)[0]:     # decided by req.host alone: cacheable
        if len(_DOMAINS) >= _DOMAINS_MAX:
            _DOMAINS.clear()
        _DOMAINS[h] = got
    return got


class RouteConsts:
    """What a route's events share, decided once when the route is built (the per-request
    builders below take it, or work it out from the request when not given)."""

    __slots__ = ("api_type", "api_id", "cut", "http")

    def __init__(self, api_type: str, api_id: str, cut: int):
        self.api_type = api_type
        self.api_id = api_id
        self.cut = cut
        self.http = api_type == "http"

    @classmethod
    def of(cls, req) -> "RouteConsts":
        return cls(getattr(req.api, "type", "rest"), _api_id(req), _cut(req))


#: a 1.0 event's requestContext.identity: copied per event (a handler may change its
#: copy), then sourceIp, userAgent and apiKey are filled in
_IDENTITY = {
    "accessKey": None, "accountId": None, "caller": None,
    "cognitoAuthenticationProvider": None, "cognitoAuthenticationType": None,
    "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
    "principalOrgId": None, "sourceIp": None, "user": None,
    "userAgent": None, "userArn": None,
    "clientCert": None, "apiKey": None, "apiKeyId": None,
}
#: requestContext.protocol by the request's HTTP version (the common ones, made once)
_PROTOCOLS: dict[str | None, str] = {v: "HTTP/" + v for v in ("1.1", "1.0", "2", "2.0", "3")}


def _protocol(version: str | None) -> str:
    p = _PROTOCOLS.get(version)
    return p if p is not None else "HTTP/" + (version or "1.1")


def event_v1(req, body: bytes, binary_types, resource: str, stage_vars: dict,
             consts: RouteConsts | None = None) -> dict:
    if consts is None:
        consts = RouteConsts.of(req)
    headers: dict = {}
    mv_headers: dict = {}
    for k, v in req.headers:
        headers[k] = v
        lst = mv_headers.get(k)
        if lst is None:
            mv_headers[k] = [v]
        else:
            lst.append(v)
    qp: dict | None = None
    mvq: dict | None = None
    query = req.query
    if query:
        pairs = parse_query(query)
        if pairs:
            qp, mvq = {}, {}
            for k, v in pairs:
                qp[k] = v
                mvq.setdefault(k, []).append(v)
    if body:
        ct = mv_headers.get("content-type")
        text, b64 = encode_body(body, ct[0] if ct else None, consts.api_type, binary_types)
    else:
        text, b64 = None, False
    h = req.host
    dom = _DOMAINS.get(h) if h else None
    if dom is None:
        dom = _domain(req)
    stage = req.stage
    method = req.method
    path = req.path
    rid = req.request_id
    t = req.start_time
    last = _last_time
    rtime = last[1] if t >= 0 and int(t) == last[0] else request_time(t)
    ident = _IDENTITY.copy()
    ident["sourceIp"] = req.client_ip
    ua = mv_headers.get("user-agent")
    if ua:
        ident["userAgent"] = ua[0]
    ident["apiKey"] = req.api_key
    cut = consts.cut
    rc = {
        "accountId": ACCOUNT_ID,
        "apiId": consts.api_id,
        "domainName": dom[0],
        "domainPrefix": dom[1],
        "extendedRequestId": rid,
        "httpMethod": method,
        "identity": ident,
        "path": path,
        "protocol": _protocol(req.http_version),
        "requestId": rid,
        "requestTime": rtime,
        "requestTimeEpoch": int(t * 1000),
        "resourceId": None,
        "resourcePath": resource,
        "stage": stage.name if stage is not None else "$default",
    }
    if req.auth_context is not None:
        rc["authorizer"] = req.auth_context
    pp = req.path_params
    # HTTP APIs' 1.0 events start with "version" (key order is part of the JSON)
    return {
        **(_V1_VERSION if consts.http else _NO_KEYS),
        "resource": resource,
        "path": (path[cut:] or "/") if cut else (path or "/"),
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": mv_headers or None,
        "queryStringParameters": qp,
        "multiValueQueryStringParameters": mvq,
        "pathParameters": dict(pp) if pp else None,
        "stageVariables": dict(stage_vars) if stage_vars else None,
        "requestContext": rc,
        "body": text,
        "isBase64Encoded": b64,
    }


_V1_VERSION = {"version": "1.0"}
_NO_KEYS: dict = {}


def event_v2(req, body: bytes, binary_types, route_key: str, stage_vars: dict,
             consts: RouteConsts | None = None) -> dict:
    api_id = consts.api_id if consts is not None else _api_id(req)
    headers: dict = {}
    cookies: list | None = None
    for k, v in req.headers:
        if k == "cookie":
            if cookies is None:
                cookies = []
            cookies.extend(c.strip() for c in v.split(";") if c.strip())
            continue
        prev = headers.get(k)
        headers[k] = v if prev is None else prev + "," + v
    h = req.host
    dom = _DOMAINS.get(h) if h else None
    if dom is None:
        dom = _domain(req)
    t = req.start_time
    last = _last_time
    rtime = last[1] if t >= 0 and int(t) == last[0] else request_time(t)
    query = req.query
    path = req.path
    qp: dict | None = None
    if query:
        qp = {}
        for k, v in parse_query(query):
            prev = qp.get(k)
            qp[k] = v if prev is None else prev + "," + v
    # the first value of a header (what req.header() gives) is the joined one unless it
    # has a comma
    ua = headers.get("user-agent", "")
    if "," in ua:
        ua = req.header("user-agent", "")
    stage = req.stage
    ctx = {
        "accountId": ACCOUNT_ID,
        "apiId": api_id,
        "domainName": dom[0],
        "domainPrefix": dom[1],
        "http": {
            "method": req.method,
            "path": path,
            "protocol": _protocol(req.http_version),
            "sourceIp": req.client_ip,
            "userAgent": ua,
        },
        "requestId": req.request_id,
        "routeKey": route_key,
        "stage": stage.name if stage is not None else "$default",
        "time": rtime,
        "timeEpoch": int(t * 1000),
    }
    if req.auth_context is not None:
        ctx["authorizer"] = req.auth_context
    if cookies or qp:
        ev = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": path,
            "rawQueryString": query or "",
        }
        if cookies:
            ev["cookies"] = cookies
        ev["headers"] = headers
        if qp:
            ev["queryStringParameters"] = qp
        ev["requestContext"] = ctx
    else:
        ev = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": path,
            "rawQueryString": query or "",
            "headers": headers,
            "requestContext": ctx,
        }
    if body:
        ct = headers.get("content-type")
        if ct is not None and "," in ct:
            ct = req.header("content-type")
        text, b64 = encode_body(body, ct, "http", binary_types)
        if text is not None:
            ev["body"] = text
    else:
        b64 = False
    if req.path_params:
        ev["pathParameters"] = dict(req.path_params)
    ev["isBase64Encoded"] = b64
    if stage_vars:
        ev["stageVariables"] = dict(stage_vars)
    return ev
