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
    out = []
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


def _stage_path(req, cut: int | None = None) -> str:
    """The request path without base path and stage prefix (what REST calls ``path``)."""
    p = req.path
    if cut is None:
        cut = _cut(req)
    rest = p[cut:] if cut else p
    return rest or "/"


def _cut(req) -> int:
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

    __slots__ = ("api_type", "api_id", "cut")

    def __init__(self, api_type: str, api_id: str, cut: int):
        self.api_type = api_type
        self.api_id = api_id
        self.cut = cut

    @classmethod
    def of(cls, req) -> "RouteConsts":
        return cls(getattr(req.api, "type", "rest"), _api_id(req), _cut(req))


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
    qp = None
    mvq = None
    if req.query:
        pairs = parse_query(req.query)
        if pairs:
            qp, mvq = {}, {}
            for k, v in pairs:
                qp[k] = v
                mvq.setdefault(k, []).append(v)
    api_type = consts.api_type
    if body:
        ct = mv_headers.get("content-type")
        text, b64 = encode_body(body, ct[0] if ct else None, api_type, binary_types)
    else:
        text, b64 = None, False
    api_id = consts.api_id
    domain, prefix = _domain(req)
    stage = req.stage
    method = req.method
    t = req.start_time
    ua = mv_headers.get("user-agent")
    ev = {
        "resource": resource,
        "path": _stage_path(req, consts.cut),
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": mv_headers or None,
        "queryStringParameters": qp,
        "multiValueQueryStringParameters": mvq,
        "pathParameters": dict(req.path_params) if req.path_params else None,
        "stageVariables": dict(stage_vars) if stage_vars else None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": api_id,
            "domainName": domain,
            "domainPrefix": prefix,
            "extendedRequestId": req.request_id,
            "httpMethod": method,
            "identity": {
                "accessKey": None, "accountId": None, "caller": None,
                "cognitoAuthenticationProvider": None, "cognitoAuthenticationType": None,
                "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
                "principalOrgId": None, "sourceIp": req.client_ip, "user": None,
                "userAgent": ua[0] if ua else None, "userArn": None,
                "clientCert": None, "apiKey": req.api_key, "apiKeyId": None,
            },
            "path": req.path,
            "protocol": "HTTP/" + (req.http_version or "1.1"),
            "requestId": req.request_id,
            "requestTime": request_time(t),
            "requestTimeEpoch": int(t * 1000),
            "resourceId": None,
            "resourcePath": resource,
            "stage": stage.name if stage is not None else "$default",
        },
        "body": text,
        "isBase64Encoded": b64,
    }
    if api_type == "http":
        ev = {"version": "1.0", **ev}
    if req.auth_context is not None:
        ev["requestContext"]["authorizer"] = req.auth_context
    return ev


def event_v2(req, body: bytes, binary_types, route_key: str, stage_vars: dict,
             consts: RouteConsts | None = None) -> dict:
    api_id = consts.api_id if consts is not None else _api_id(req)
    headers: dict = {}
    cookies = None
    for k, v in req.headers:
        if k == "cookie":
            if cookies is None:
                cookies = []
            cookies.extend(c.strip() for c in v.split(";") if c.strip())
            continue
        prev = headers.get(k)
        headers[k] = v if prev is None else prev + "," + v
    domain, prefix = _domain(req)
    t = req.start_time
    query = req.query
    path = req.path
    ev = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query or "",
    }
    if cookies:
        ev["cookies"] = cookies
    ev["headers"] = headers
    if query:
        qp: dict = {}
        for k, v in parse_query(query):
            prev = qp.get(k)
            qp[k] = v if prev is None else prev + "," + v
        if qp:
            ev["queryStringParameters"] = qp
    # the first value of a header (what req.header() gives) is the joined one unless it
    # has a comma
    ua = headers.get("user-agent", "")
    if "," in ua:
        ua = req.header("user-agent", "")
    stage = req.stage
    ctx = {
        "accountId": ACCOUNT_ID,
        "apiId": api_id,
        "domainName": domain,
        "domainPrefix": prefix,
        "http": {
            "method": req.method,
            "path": path,
            "protocol": "HTTP/" + (req.http_version or "1.1"),
            "sourceIp": req.client_ip,
            "userAgent": ua,
        },
        "requestId": req.request_id,
        "routeKey": route_key,
        "stage": stage.name if stage is not None else "$default",
        "time": request_time(t),
        "timeEpoch": int(t * 1000),
    }
    if req.auth_context is not None:
        ctx["authorizer"] = req.auth_context
    ev["requestContext"] = ctx
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
