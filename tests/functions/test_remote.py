"""The remote runtime: one gateway invokes functions through another gateway's Invoke API
(a Lambda-compatible endpoint), SigV4-signed exactly as botocore signs."""
from __future__ import annotations

import calendar
import json
import time

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from proxy.functions.sigv4 import sign

from .conftest import gateway

BACKEND = """
functions:
  ok: {handler: basic.ok, code: "{fixtures}", runtime: inline}
  fail: {handler: basic.fail, code: "{fixtures}", runtime: inline}
  raw: {handler: basic.raw, code: "{fixtures}", runtime: process}
apis: {}
"""

FRONT = """
functions:
  r_ok: {runtime: remote, endpoint: "ENDPOINT", function_name: ok,
         credentials: {access_key_id: AKID, secret_access_key: secret, region: us-east-1}}
  r_fail: {runtime: remote, endpoint: "ENDPOINT", function_name: fail}
  r_raw: {runtime: remote, endpoint: "ENDPOINT", function_name: raw}
  r_missing: {runtime: remote, endpoint: "ENDPOINT", function_name: nope}
  r_down: {runtime: remote, endpoint: "http://127.0.0.1:1", timeout: 1s}
apis:
  rest:
    type: rest
    stages: {prod: {}}
    routes:
      - {route: GET /ok, integration: {type: aws_proxy, function: r_ok}}
      - {route: GET /fail, integration: {type: aws_proxy, function: r_fail}}
      - {route: POST /raw, integration: {type: aws_proxy, function: r_raw}}
      - {route: GET /missing, integration: {type: aws_proxy, function: r_missing}}
      - {route: GET /down, integration: {type: aws_proxy, function: r_down}}
"""


@pytest.fixture(scope="module")
def gws():
    back = gateway(BACKEND, admin=True)
    try:
        front = gateway(FRONT.replace("ENDPOINT", back.admin_url), admin=True)
    except Exception:
        back.stop()
        raise
    yield front, back
    front.stop()
    back.stop()


def test_remote_invocation(gws):
    front, back = gws
    for _ in range(3):                  # keep-alive connection reuse
        st, h, body = front.request("GET", "/prod/ok")
        assert st == 200 and body.isdigit()
    st, h, body = front.request("POST", "/prod/raw", json.dumps(
        {"return": {"statusCode": 202, "body": "via process", "headers": {"x-r": "1"}}}).encode())
    assert (st, body, h["x-r"]) == (202, b"via process", "1")


def test_remote_function_error_and_missing(gws):
    front, back = gws
    st, _, body = front.request("GET", "/prod/fail")
    assert (st, json.loads(body)) == (502, {"message": "Internal server error"})
    st, _, body = front.request("GET", "/prod/missing")
    assert (st, json.loads(body)) == (502, {"message": "Internal server error"})
    st, _, body = front.request("GET", "/prod/down")
    assert (st, json.loads(body)) == (502, {"message": "Internal server error"})
    assert "remote endpoint http://127.0.0.1:1 failed" in front.logs()


def test_remote_through_invoke_api_passes_function_error(gws):
    front, _ = gws
    st, h, body = front.request("POST", "/2015-03-31/functions/r_fail/invocations", b"{}", admin=True)
    assert st == 200 and h["x-amz-function-error"] == "Unhandled"
    assert json.loads(body)["errorType"] == "ValueError"


@pytest.mark.parametrize("query,token", [("", None), ("Qualifier=%24LATEST", "TOKEN")])
def test_sigv4_matches_botocore(query, token):
    body = b'{"a": 1}'
    url = "http://127.0.0.1:9000/2015-03-31/functions/my%3Afn/invocations" + ("?" + query if query else "")
    h = {"Content-Type": "application/json", "X-Amz-Invocation-Type": "RequestResponse"}
    req = AWSRequest("POST", url, data=body, headers=dict(h))
    SigV4Auth(Credentials("AKID", "SECRET", token), "lambda", "eu-west-1").add_auth(req)
    now = calendar.timegm(time.strptime(req.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ"))
    ours = sign("POST", "127.0.0.1:9000", "/2015-03-31/functions/my:fn/invocations", query, h, body,
                access_key="AKID", secret_key="SECRET", region="eu-west-1", session_token=token, now=now)
    assert ours["Authorization"] == req.headers["Authorization"]
