"""A FastAPI app wrapped by Mangum, served through the gateway (REST/1.0 and HTTP/2.0),
answers exactly as the same app run directly (starlette's TestClient)."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import free_port, wait_port

from .conftest import FIXTURES, gateway

CONFIG = """
functions:
  api_inline: {handler: fastapi_app.handler, code: "{fixtures}", runtime: inline, timeout: 10s}
  api_process: {handler: fastapi_app.handler, code: "{fixtures}", runtime: process, timeout: 10s,
                memory_mb: 512}
apis:
  rest:
    type: rest
    binary_media_types: ["application/octet-stream"]
    stages: {prod: {}}
    routes:
      - route: ANY /{proxy+}
        integration: {type: aws_proxy, function: api_process}
  httpapi:
    type: http
    host: http.test
    routes:
      - route: $default
        integration: {type: aws_proxy, function: api_inline}
"""

CASES = [
    ("GET", "/items/7?q=hello&tag=a&tag=b", None, {"x-token": "tok", "cookie": "session=s1"}),
    ("GET", "/items/notanint", None, {}),
    ("POST", "/items", json.dumps({"name": "pen", "price": 1.5, "tags": ["x"]}).encode(),
     {"content-type": "application/json"}),
    ("POST", "/items", b'{"name": 1', {"content-type": "application/json"}),
    ("POST", "/echo-bytes", bytes(range(200)), {"content-type": "application/octet-stream"}),
    ("GET", "/text", None, {}),
    ("GET", "/missing-param", None, {}),
    ("GET", "/nope", None, {}),
    ("DELETE", "/items/1", None, {}),
    ("GET", "/boom", None, {}),     # the app's own 500 (Starlette catches it), not a function error
]

# headers the two servers legitimately set differently
IGNORE = {"date", "server", "content-length", "x-request-id", "x-amzn-requestid", "connection"}


@pytest.fixture(scope="module")
def gw():
    g = gateway(CONFIG)
    yield g
    g.stop()


@pytest.fixture(scope="module")
def direct():
    """The same app served directly by a real ASGI server (granian), no Lambda in between."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
                             "--port", str(port), "--no-ws", "--log-level", "warning", "fastapi_app:app"],
                            cwd=FIXTURES, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_port("127.0.0.1", port, 20, proc)
        yield port
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def via_gateway(gw, method, path, body, headers, host=None, port=None):
    conn = http.client.HTTPConnection("127.0.0.1", port or gw.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host:
            conn.putheader("Host", host)
        for k, v in headers.items():
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()


def norm_headers(pairs):
    out = {}
    for k, v in pairs:
        k = k.lower()
        if k in IGNORE:
            continue
        out.setdefault(k, []).append(v)
    return {k: sorted(v) for k, v in out.items()}


@pytest.mark.parametrize("flavour", ["rest-process", "http-inline"])
@pytest.mark.parametrize("method,path,body,headers", CASES, ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_same_as_direct(gw, direct, flavour, method, path, body, headers):
    want_st, want_h, want_body = via_gateway(None, method, path, body, headers, port=direct)
    if flavour == "rest-process":
        st, hdrs, got = via_gateway(gw, method, "/prod" + path, body, headers)
    else:
        st, hdrs, got = via_gateway(gw, method, path, body, headers, host="http.test")
    assert st == want_st
    assert got == want_body
    assert norm_headers(hdrs) == norm_headers(want_h)
