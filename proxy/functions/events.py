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


def request_time(t: float) -> str:
    g = time.gmtime(t)
    return f"{g.tm_mday:02d}/{_MONTHS[g.tm_mon - 1]}/{g.tm_year}:{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000"


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


def _stage_path(req) -> str:
    """The request path without base path and stage prefix (what REST calls ``path``)."""
    p = req.path
    api = req.api
    cut = len(getattr(api, "base_path", "") or "") + len(getattr(req.stage, "prefix", "") or "")
    rest = p[cut:] if cut else p
    return rest or "/"


def _api_id(req) -> str:
    cfg = getattr(req.api, "cfg", None) or {}
    return str(cfg.get("id") or getattr(req.api, "name", "api"))


def _domain(req, api_id: str) -> tuple[str, str]:
    host = (req.host or "").split(":", 1)[0] or req.header("host", "") or "localhost"
    host = host.split(":", 1)[0]
    return host, host.split(".", 1)[0]


def event_v1(req, body: bytes, binary_types, resource: str, stage_vars: dict) -> dict:
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
    api_type = getattr(req.api, "type", "rest")
    text, b64 = encode_body(body, req.header("content-type"), api_type, binary_types)
    api_id = _api_id(req)
    domain, prefix = _domain(req, api_id)
    stage_name = req.stage.name if req.stage is not None else "$default"
    t = req.start_time
    ev = {
        "resource": resource,
        "path": _stage_path(req),
        "httpMethod": req.method,
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
            "httpMethod": req.method,
            "identity": {
                "accessKey": None, "accountId": None, "caller": None,
                "cognitoAuthenticationProvider": None, "cognitoAuthenticationType": None,
                "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
                "principalOrgId": None, "sourceIp": req.client_ip, "user": None,
                "userAgent": req.header("user-agent"), "userArn": None,
                "clientCert": None, "apiKey": req.api_key, "apiKeyId": None,
            },
            "path": req.path,
            "protocol": "HTTP/" + (req.http_version or "1.1"),
            "requestId": req.request_id,
            "requestTime": request_time(t),
            "requestTimeEpoch": int(t * 1000),
            "resourceId": None,
            "resourcePath": resource,
            "stage": stage_name,
        },
        "body": text,
        "isBase64Encoded": b64,
    }
    if api_type == "http":
        ev = {"version": "1.0", **ev}
    if req.auth_context is not None:
        ev["requestContext"]["authorizer"] = req.auth_context
    return ev


def event_v2(req, body: bytes, binary_types, route_key: str, stage_vars: dict) -> dict:
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
    api_id = _api_id(req)
    domain, prefix = _domain(req, api_id)
    t = req.start_time
    ev = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": req.path,
        "rawQueryString": req.query or "",
    }
    if cookies:
        ev["cookies"] = cookies
    ev["headers"] = headers
    if req.query:
        qp: dict = {}
        for k, v in parse_query(req.query):
            prev = qp.get(k)
            qp[k] = v if prev is None else prev + "," + v
        if qp:
            ev["queryStringParameters"] = qp
    ctx = {
        "accountId": ACCOUNT_ID,
        "apiId": api_id,
        "domainName": domain,
        "domainPrefix": prefix,
        "http": {
            "method": req.method,
            "path": req.path,
            "protocol": "HTTP/" + (req.http_version or "1.1"),
            "sourceIp": req.client_ip,
            "userAgent": req.header("user-agent", ""),
        },
        "requestId": req.request_id,
        "routeKey": route_key,
        "stage": req.stage.name if req.stage is not None else "$default",
        "time": request_time(t),
        "timeEpoch": int(t * 1000),
    }
    if req.auth_context is not None:
        ctx["authorizer"] = req.auth_context
    ev["requestContext"] = ctx
    text, b64 = encode_body(body, req.header("content-type"), "http", binary_types)
    if text is not None:
        ev["body"] = text
    if req.path_params:
        ev["pathParameters"] = dict(req.path_params)
    ev["isBase64Encoded"] = b64
    if stage_vars:
        ev["stageVariables"] = dict(stage_vars)
    return ev
