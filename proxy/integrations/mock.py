"""`mock` integration: a static response from config, rendered once at config time."""
from __future__ import annotations

import orjson

from ..context import Response, answered


def build_integration(rb):
    integ = rb.route["integration"]
    status = int(integ.get("status", 200))
    headers = [(str(k).lower(), str(v)) for k, v in (integ.get("headers") or {}).items()]
    body = integ.get("body", b"")
    if isinstance(body, (dict, list)):
        body = orjson.dumps(body)
        if not any(k == "content-type" for k, _ in headers):
            headers.append(("content-type", "application/json"))
    elif isinstance(body, str):
        body = body.encode()
    elif body is None:
        body = b""
    else:
        body = str(body).encode()
    headers = tuple(headers)

    def mock(req):
        return answered(Response(status, list(headers), body))

    return mock
