"""The process runtime through a real gateway: cold then warm workers, timeout kill and
recovery, crash recovery, reserved concurrency (429 while other functions keep working),
the memory limit, per-invocation output capture and the START/END/REPORT lines."""
from __future__ import annotations

import base64
import json
import os
import re
import threading
import time

import pytest

from .conftest import gateway

CONFIG = """
functions:
  echo: {handler: basic.echo, code: "{fixtures}", runtime: process, environment: {GREETING: hi}}
  sleeper: {handler: basic.sleep, code: "{fixtures}", runtime: process, timeout: 1s,
            concurrency: 1, queue_wait: 200ms}
  crasher: {handler: basic.crash, code: "{fixtures}", runtime: process}
  hog: {handler: basic.hog, code: "{fixtures}", runtime: process, memory_mb: 128}
  other: {handler: basic.ok, code: "{fixtures}", runtime: process}
  slow: {handler: slow.handler, code: "{fixtures}", runtime: process, timeout: 5s,
         environment: {SLEEP: "1.5"}}
apis:
  rest:
    type: rest
    stages: {prod: {}}
    routes:
      - route: GET /sleep
        integration: {type: aws_proxy, function: sleeper}
      - route: GET /other
        integration: {type: aws_proxy, function: other}
      - route: GET /slow
        integration: {type: aws_proxy, function: slow, timeout: 300ms}
      - route: GET /crash
        integration: {type: aws_proxy, function: crasher}
"""


@pytest.fixture(scope="module")
def gw():
    g = gateway(CONFIG, admin=True)
    yield g
    g.stop()


def invoke(gw, name, payload, tail=True):
    headers = {"X-Amz-Log-Type": "Tail"} if tail else {}
    st, h, body = gw.request("POST", f"/2015-03-31/functions/{name}/invocations",
                             json.dumps(payload).encode(), headers, admin=True)
    log = base64.b64decode(h["x-amz-log-result"]).decode() if "x-amz-log-result" in h else ""
    return st, h, json.loads(body) if body else None, log


def gone(pid, within=5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


REPORT = re.compile(r"REPORT RequestId: (\S+)\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\t"
                    r"Memory Size: (\d+) MB\tMax Memory Used: (\d+) MB\t(Init Duration: [\d.]+ ms\t)?")


def test_cold_then_warm(gw):
    st, h, first, log1 = invoke(gw, "echo", {"k": 1})
    assert st == 200 and "x-amz-function-error" not in h
    st, h, second, log2 = invoke(gw, "echo", {"k": 2})
    assert st == 200
    assert first["pid"] == second["pid"]                  # the warm worker was reused
    assert second["n"] == first["n"] + 1                  # with its module state
    assert first["event"] == {"k": 1} and second["event"] == {"k": 2}
    assert first["ctx"]["env"] == "hi"
    assert first["ctx"]["function_name"] == "echo"
    assert first["ctx"]["memory_limit_in_mb"] == "128"
    assert first["ctx"]["invoked_function_arn"].endswith(":function:echo")
    assert 0 < first["ctx"]["remaining"] <= 3000
    m1, m2 = REPORT.search(log1), REPORT.search(log2)
    assert m1 and m2
    assert m1.group(4) is not None and m2.group(4) is None    # Init Duration only when cold
    assert int(m1.group(3)) > 0
    rid = first["ctx"]["aws_request_id"]
    assert m1.group(1) == rid
    assert log1.index(f"START RequestId: {rid} Version: $LATEST") < log1.index(f"echo {rid}") \
        < log1.index(f"END RequestId: {rid}") < log1.index("REPORT")
    assert "init basic" in log1 and "init basic" not in log2   # init output belongs to the cold start
    assert rid not in log2 and f"echo {second['ctx']['aws_request_id']}" in log2
    assert f"[function echo] REPORT RequestId: {rid}" in gw.logs()


def test_timeout_kills_and_replaces_the_worker(gw):
    st, _, warm, _ = invoke(gw, "sleeper", {"seconds": 0})
    assert st == 200
    pid = warm["pid"]
    t0 = time.monotonic()
    st, _, body = gw.request("GET", "/prod/sleep")          # sleeps 5 s; the timeout is 1 s
    took = time.monotonic() - t0
    assert (st, json.loads(body)) == (502, {"message": "Internal server error"})
    assert 0.9 < took < 3
    assert gone(pid)                                         # killed
    st, h, after, log = invoke(gw, "sleeper", {"seconds": 0})
    assert st == 200 and after["slept"] and after["pid"] != pid
    assert "Init Duration" in log                            # a fresh (cold) worker
    assert "Task timed out after 1.00 seconds" in gw.logs()


def test_timeout_via_invoke_api_is_a_function_error(gw):
    st, h, body, log = invoke(gw, "sleeper", {"seconds": 3})
    assert st == 200
    assert h["x-amz-function-error"] == "Unhandled"
    assert body["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in body["errorMessage"]
    assert "Status: timeout" in log


def test_crash_fails_only_its_own_request(gw):
    st, _, ok1, _ = invoke(gw, "crasher", {"crash": False})
    assert st == 200
    results = {}

    def other_calls():
        results["other"] = [gw.request("GET", "/prod/other")[0] for _ in range(5)]

    t = threading.Thread(target=other_calls)
    t.start()
    st, h, err, log = invoke(gw, "crasher", {"crash": True})
    t.join()
    assert st == 200 and h["x-amz-function-error"] == "Unhandled"
    assert err["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in err["errorMessage"]
    assert "crashing now" in log                             # its output up to the crash
    assert gone(ok1["pid"])
    st, _, ok2, _ = invoke(gw, "crasher", {"crash": False})
    assert st == 200 and ok2["pid"] != ok1["pid"]
    assert results["other"] == [200] * 5
    st, _, body = gw.request("GET", "/prod/crash")
    assert (st, json.loads(body)) == (502, {"message": "Internal server error"})


def test_concurrency_cap_gives_429_and_other_functions_work(gw):
    out = {}

    def occupy():
        out["first"] = gw.request("GET", "/prod/sleep")      # holds the only slot ~1 s

    t = threading.Thread(target=occupy)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    st, h, body = gw.request("GET", "/prod/sleep")
    waited = time.monotonic() - t0
    assert (st, json.loads(body)) == (429, {"message": "Too Many Requests"})
    assert 0.15 < waited < 0.8                               # the bounded wait (200 ms)
    st, _, body = gw.request("GET", "/prod/other")           # another function is unaffected
    assert st == 200
    st2, _, b2, _ = invoke(gw, "other", {})
    assert st2 == 200 and b2["statusCode"] == 200
    st, h, body, _ = invoke(gw, "sleeper", {"seconds": 0})   # the Invoke API is throttled too
    assert st == 429 and h["x-amzn-errortype"] == "TooManyRequestsException"
    t.join()
    assert out["first"][0] == 502                            # it timed out (function error)


def test_memory_limit(gw):
    st, _, small, _ = invoke(gw, "hog", {"mb": 16})
    assert st == 200 and small["allocated_mb"] == 16
    st, h, err, log = invoke(gw, "hog", {"mb": 1024})
    assert h["x-amz-function-error"] == "Unhandled"
    assert err["errorType"] == "Runtime.OutOfMemory"
    assert "Max Memory Used" in log
    assert gone(small["pid"])                                # replaced
    st, _, again, _ = invoke(gw, "hog", {"mb": 16})
    assert st == 200 and again["pid"] != small["pid"]


def test_integration_timeout_is_504_function_timeout_is_function_error(gw):
    t0 = time.monotonic()
    st, _, body = gw.request("GET", "/prod/slow")            # function sleeps 1.5 s, route allows 300 ms
    assert (st, json.loads(body)) == (504, {"message": "Endpoint request timed out"})
    assert time.monotonic() - t0 < 1.2
