"""The Lambda Runtime API served by the gateway, with AWS's own unchanged runtime client
(awslambdaric from PyPI) started by the gateway as the function's runtime."""
from __future__ import annotations

import base64
import json
import time

import pytest

from .conftest import gateway

pytest.importorskip("awslambdaric")

CONFIG = """
functions:
  rt_echo: {handler: basic.echo, code: "{fixtures}", runtime: runtime-api, environment: {GREETING: rt}}
  rt_http: {handler: pt_apps.http_handler, code: "{fixtures}", runtime: runtime-api, timeout: 10s,
            command: ["{python}", "-m", "awslambdaric", "pt_apps.http_handler"]}
  rt_fail: {handler: basic.fail, code: "{fixtures}", runtime: runtime-api}
  rt_sleep: {handler: basic.sleep, code: "{fixtures}", runtime: runtime-api, timeout: 1s}
  # a command of its own is not import-checked at load time: the runtime reports init errors
  rt_broken: {handler: basic.echo, code: "{fixtures}", runtime: runtime-api,
              command: ["{python}", "-m", "awslambdaric", "basic.no_such_function"]}
apis:
  httpapi:
    type: http
    routes:
      - route: $default
        integration: {type: aws_proxy, function: rt_http}
"""


@pytest.fixture(scope="module")
def gw():
    g = gateway(CONFIG, admin=True)
    yield g
    g.stop()


def invoke(gw, name, payload):
    st, h, body = gw.request("POST", f"/2015-03-31/functions/{name}/invocations",
                             json.dumps(payload).encode(), {"X-Amz-Log-Type": "Tail"}, admin=True)
    log = base64.b64decode(h.get("x-amz-log-result", "")).decode()
    return st, h, json.loads(body), log


def test_awslambdaric_serves_an_invocation(gw):
    st, h, first, log = invoke(gw, "rt_echo", {"k": 1})
    assert st == 200 and "x-amz-function-error" not in h
    assert first["event"] == {"k": 1}
    ctx = first["ctx"]
    assert ctx["function_name"] == "rt_echo"
    assert ctx["env"] == "rt"
    assert ctx["invoked_function_arn"].endswith(":function:rt_echo")
    assert 0 < ctx["remaining"] <= 3000                 # from Lambda-Runtime-Deadline-Ms
    assert "Init Duration" in log and f"echo {ctx['aws_request_id']}" in log
    st, h, second, log2 = invoke(gw, "rt_echo", {"k": 2})
    assert second["pid"] == first["pid"] and second["n"] == 2      # warm runtime reused
    assert "Init Duration" not in log2


def test_powertools_app_through_awslambdaric(gw):
    st, h, body = gw.request("GET", "/items/9?a=1&a=2", headers={"x-custom": "c", "cookie": "s=1"})
    assert st == 200, body
    d = json.loads(body)
    assert d["item_id"] == "9" and d["multi_query"] == {"a": ["1", "2"]}
    assert d["custom_header"] == "c" and d["cookies"] == ["s=1"]
    data = bytes(range(256))
    st, h, body = gw.request("POST", "/binary", data, {"content-type": "application/octet-stream"})
    assert (st, body) == (200, data[::-1])
    st, h, body = gw.request("GET", "/fail")
    assert (st, json.loads(body)) == (500, {"message": "Internal Server Error"})


def test_function_error_posted_to_error_endpoint(gw):
    st, h, err, log = invoke(gw, "rt_fail", {})
    assert st == 200 and h["x-amz-function-error"] == "Unhandled"
    assert err["errorType"] == "ValueError" and err["errorMessage"] == "boom secret-detail"
    assert "about to fail" in log


def test_timeout_kills_runtime_and_recovers(gw):
    st, _, ok, _ = invoke(gw, "rt_sleep", {"seconds": 0})
    t0 = time.monotonic()
    st, h, err, log = invoke(gw, "rt_sleep", {"seconds": 5})
    assert time.monotonic() - t0 < 3
    assert h["x-amz-function-error"] == "Unhandled" and err["errorType"] == "Sandbox.Timedout"
    st, h, again, log = invoke(gw, "rt_sleep", {"seconds": 0})
    assert st == 200 and again["slept"] and again["pid"] != ok["pid"]


def test_init_error_reported(gw):
    st, h, err, log = invoke(gw, "rt_broken", {})
    assert h["x-amz-function-error"] == "Unhandled"
    assert err["errorType"] == "Runtime.HandlerNotFound"
