"""A function's result turned into the HTTP response, the way API Gateway does it.

Payload 1.0: ``{statusCode, headers, multiValueHeaders, body, isBase64Encoded}``; anything
else is malformed. Payload 2.0 adds ``cookies`` and, when the result has no
``statusCode``, answers 200 with the result as a JSON body. A malformed result or a
function error is REST's 502 ``{"message": "Internal server error"}`` or the HTTP API's
500 ``{"message": "Internal Server Error"}``.
"""
from __future__ import annotations

import base64
import binascii

import orjson

from ..context import Response, gateway_response
from .invocation import _UNSET, Result


class Malformed(Exception):
    pass


_V1_KEYS = frozenset(("statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded"))
#: never copied from a function's response: the server frames the body itself
_DROP = frozenset(("content-length", "transfer-encoding", "connection", "keep-alive",
                   "upgrade", "te", "trailer", "proxy-connection"))
_JSON = ("content-type", "application/json")


def function_error(api_type: str) -> Response:
    if api_type == "rest":
        r = gateway_response(502, "Internal server error", [("x-amzn-ErrorType", "InternalServerErrorException")])
    else:
        r = gateway_response(500, "Internal Server Error")
    return r


def _hval(v) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    raise Malformed("header value")


def _status(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not (100 <= v <= 599):
        raise Malformed("statusCode")
    return v


def _b64_flag(d: dict) -> bool:
    """``isBase64Encoded``: absent or null is false; anything but a boolean is malformed."""
    b64 = d.get("isBase64Encoded", False)
    if b64 is None:
        return False
    if not isinstance(b64, bool):
        raise Malformed("isBase64Encoded")
    return b64


def _body(v, b64) -> bytes:
    if v is None:
        return b""
    if not isinstance(v, str):
        raise Malformed("body")
    if b64:
        try:
            return base64.b64decode(v, validate=True)
        except (binascii.Error, ValueError):
            raise Malformed("base64 body")
    return v.encode("utf-8")


def _headers_v1(d: dict, strict: bool) -> list:
    h = d.get("headers")
    mv = d.get("multiValueHeaders")
    if h is not None and not isinstance(h, dict):
        raise Malformed("headers")
    if mv is not None and not isinstance(mv, dict):
        raise Malformed("multiValueHeaders")
    out = []
    seen = set()
    if mv:
        for k, vals in mv.items():
            if not isinstance(vals, list):
                raise Malformed("multiValueHeaders")
            lk = k.lower()
            seen.add(lk)
            if lk in _DROP:
                continue
            for v in vals:
                out.append((k, _hval(v)))
    if h:
        for k, v in h.items():
            lk = k.lower()
            if lk in seen:
                continue   # multiValueHeaders wins for the same name (AWS)
            if lk in _DROP:
                continue
            out.append((k, _hval(v)))
    return out


#: a response header name -> 0 (copy it), 1 (content-type: copy it, and it is there) or
#: 2 (drop it); bounded
_NAMES: dict = {}
_NAMES_MAX = 512


def _name_class(k) -> int:
    lk = k.lower()      # AttributeError for a name that is not a string: malformed
    c = 2 if lk in _DROP else 1 if lk == "content-type" else 0
    if type(k) is str:
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[k] = c
    return c


def _v1(d, api_type: str) -> Response:
    """Payload 1.0's response; raises Malformed (or TypeError, ValueError, AttributeError)
    for a malformed one."""
    if type(d) is dict and len(d) == 3 and "body" in d and "headers" in d and "statusCode" in d:
        # {statusCode, headers, body} (the common shape): when its values are the plain
        # kinds, what _v1_any makes of it, with fewer checks
        status = d["statusCode"]
        h = d["headers"]
        body = d["body"]
        if type(status) is int and 100 <= status <= 599 and type(h) is dict and type(body) is str:
            headers = []
            has_ct = False
            names = _NAMES
            for k, v in h.items():
                c = names.get(k) if type(k) is str else None
                if c is None:
                    c = _name_class(k)
                if c:
                    if c == 2:
                        continue
                    has_ct = True
                headers.append((k, v if type(v) is str else _hval(v)))
            if not has_ct and api_type == "rest":
                headers.append(_JSON)
            return Response(status, headers, body.encode("utf-8"))
    return _v1_any(d, api_type)


def _v1_any(d, api_type: str) -> Response:
    """Payload 1.0's response, any shape (the reference for _v1's shortcut)."""
    if not isinstance(d, dict):
        raise Malformed("not an object")
    rest = api_type == "rest"
    if rest and not d.keys() <= _V1_KEYS:
        raise Malformed("unknown field")
    if "statusCode" not in d:
        raise Malformed("no statusCode")
    status = d["statusCode"]
    if type(status) is not int or not (100 <= status <= 599):
        status = _status(status)
    b64 = d.get("isBase64Encoded", False)
    if b64 is not False:
        b64 = _b64_flag(d)
    if d.get("multiValueHeaders") is None:
        # headers alone (the common case): one pass, noting Content-Type on the way
        h = d.get("headers")
        headers = []
        has_ct = False
        if h:
            if not isinstance(h, dict):
                raise Malformed("headers")
            for k, v in h.items():
                lk = k.lower()
                if lk in _DROP:
                    continue
                if lk == "content-type":
                    has_ct = True
                headers.append((k, v if type(v) is str else _hval(v)))
        elif h is not None and not isinstance(h, dict):
            raise Malformed("headers")
    else:
        headers = _headers_v1(d, rest)
        has_ct = any(k.lower() == "content-type" for k, _ in headers)
    body = _body(d.get("body"), b64)
    if rest and not has_ct:
        headers.append(_JSON)
    return Response(status, headers, body)


def _v2(d, payload: bytes | None) -> Response:
    if not isinstance(d, dict) or "statusCode" not in d:
        # JSON without statusCode: 200 with that JSON as the body
        body = payload if payload is not None else orjson.dumps(d)
        return Response(200, [_JSON], body)
    status = _status(d["statusCode"])
    b64 = _b64_flag(d)
    h = d.get("headers")
    if h is not None and not isinstance(h, dict):
        raise Malformed("headers")
    headers = []
    if h:
        for k, v in h.items():
            if k.lower() in _DROP:
                continue
            headers.append((k, _hval(v)))
    cookies = d.get("cookies")
    if cookies is not None:
        if not isinstance(cookies, list):
            raise Malformed("cookies")
        for c in cookies:
            if not isinstance(c, str):
                raise Malformed("cookie")
            headers.append(("set-cookie", c))
    return Response(status, headers, _body(d.get("body"), b64))


def to_response(result: Result, payload_format: str, api_type: str) -> Response:
    """The client's response for a finished invocation (never raises)."""
    if result.error is not None:
        return function_error(api_type)
    value = result._value
    if value is _UNSET:
        try:
            value = result.value
        except ValueError:
            return function_error(api_type)
    try:
        if payload_format == "2.0":
            return _v2(value, result._payload)
        return _v1(value, api_type)
    except Malformed:
        return function_error(api_type)
    except (TypeError, ValueError, AttributeError):
        return function_error(api_type)
