"""Function results -> HTTP responses, exactly as API Gateway: each kind of malformed result
gives REST's 502 {"message": "Internal server error"} or the HTTP API's 500
{"message": "Internal Server Error"}; well-formed ones come through intact."""
from __future__ import annotations

import base64
import json

import pytest

from .conftest import gateway

CONFIG = """
functions:
  raw_inline: {handler: basic.raw, code: "{fixtures}", runtime: inline}
  raw_process: {handler: basic.raw, code: "{fixtures}", runtime: process}
apis:
  rest:
    type: rest
    stages: {prod: {}}
    routes:
      - route: POST /inline
        integration: {type: aws_proxy, function: raw_inline}
      - route: POST /process
        integration: {type: aws_proxy, function: raw_process}
  httpapi:
    type: http
    host: http.test
    routes:
      - route: POST /inline
        integration: {type: aws_proxy, function: raw_inline, payload_format: "2.0"}
      - route: POST /process
        integration: {type: aws_proxy, function: raw_process, payload_format: "2.0"}
      - route: POST /v1/inline
        integration: {type: aws_proxy, function: raw_inline, payload_format: "1.0"}
"""

REST_ERR = (502, {"message": "Internal server error"})
HTTP_ERR = (500, {"message": "Internal Server Error"})

# results that are malformed for payload 1.0 (REST)
MALFORMED_V1 = {
    "list": [1, 2],
    "string": "hello",
    "number": 42,
    "null": None,
    "no_status": {"body": "x"},
    "status_string": {"statusCode": "200", "body": "x"},
    "status_float": {"statusCode": 200.5, "body": "x"},
    "status_bool": {"statusCode": True, "body": "x"},
    "status_range": {"statusCode": 99, "body": "x"},
    "body_object": {"statusCode": 200, "body": {"a": 1}},
    "body_number": {"statusCode": 200, "body": 5},
    "headers_list": {"statusCode": 200, "headers": ["a"], "body": ""},
    "header_value_object": {"statusCode": 200, "headers": {"a": {"b": 1}}, "body": ""},
    "mv_headers_not_list": {"statusCode": 200, "multiValueHeaders": {"a": "b"}, "body": ""},
    "b64_not_bool": {"statusCode": 200, "isBase64Encoded": "yes", "body": ""},
    "b64_invalid": {"statusCode": 200, "isBase64Encoded": True, "body": "@@not base64@@"},
    "unknown_field": {"statusCode": 200, "body": "", "cookies": ["a=1"]},
}

# results that are malformed for payload 2.0 (HTTP APIs)
MALFORMED_V2 = {
    "status_string": {"statusCode": "200", "body": "x"},
    "status_range": {"statusCode": 1000, "body": "x"},
    "body_object": {"statusCode": 200, "body": {"a": 1}},
    "headers_list": {"statusCode": 200, "headers": ["a"]},
    "header_value_list": {"statusCode": 200, "headers": {"a": ["b"]}},
    "cookies_string": {"statusCode": 200, "cookies": "a=1"},
    "cookie_number": {"statusCode": 200, "cookies": [1]},
    "b64_invalid": {"statusCode": 200, "isBase64Encoded": True, "body": "%%%"},
    "b64_not_bool": {"statusCode": 200, "isBase64Encoded": 1, "body": ""},
}


@pytest.fixture(scope="module")
def gw():
    g = gateway(CONFIG)
    yield g
    g.stop()


def call(gw, path, ret, http=False):
    headers = {"content-type": "application/json"}
    if http:
        headers["host"] = "http.test"
    st, h, body = gw.request("POST", path, json.dumps({"return": ret}).encode(), headers)
    return st, h, body


@pytest.mark.parametrize("runtime", ["inline", "process"])
@pytest.mark.parametrize("kind", sorted(MALFORMED_V1))
def test_rest_malformed(gw, runtime, kind):
    st, _, body = call(gw, f"/prod/{runtime}", MALFORMED_V1[kind])
    assert (st, json.loads(body)) == REST_ERR


@pytest.mark.parametrize("runtime", ["inline", "process"])
@pytest.mark.parametrize("kind", sorted(MALFORMED_V2))
def test_http_malformed(gw, runtime, kind):
    st, _, body = call(gw, f"/{runtime}", MALFORMED_V2[kind], http=True)
    assert (st, json.loads(body)) == HTTP_ERR


@pytest.mark.parametrize("kind", ["list", "no_status", "status_string", "body_object", "b64_invalid"])
def test_http_api_payload_v1_malformed_is_500(gw, kind):
    st, _, body = call(gw, "/v1/inline", MALFORMED_V1[kind], http=True)
    assert (st, json.loads(body)) == HTTP_ERR


@pytest.mark.parametrize("runtime", ["inline", "process"])
def test_rest_well_formed(gw, runtime):
    ret = {"statusCode": 418, "headers": {"X-One": "1", "X-Both": "single"},
           "multiValueHeaders": {"X-Multi": ["a", "b"], "X-Both": ["m1", "m2"]},
           "body": "short and stout", "isBase64Encoded": False}
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("POST", f"/prod/{runtime}", json.dumps({"return": ret}))
    r = conn.getresponse()
    body = r.read()
    conn.close()
    h = {}
    for k, v in r.getheaders():
        h.setdefault(k.lower(), []).append(v)
    assert r.status == 418
    assert body == b"short and stout"
    assert h["x-one"] == ["1"]
    assert h["content-type"] == ["application/json"]   # REST's default
    assert h["x-multi"] == ["a", "b"]
    assert h["x-both"] == ["m1", "m2"]                  # multiValueHeaders wins


@pytest.mark.parametrize("runtime", ["inline", "process"])
def test_rest_binary_response(gw, runtime):
    data = bytes(range(256))
    ret = {"statusCode": 200, "headers": {"content-type": "image/png"},
           "body": base64.b64encode(data).decode(), "isBase64Encoded": True}
    st, h, body = call(gw, f"/prod/{runtime}", ret)
    assert (st, body, h["content-type"]) == (200, data, "image/png")


@pytest.mark.parametrize("runtime", ["inline", "process"])
@pytest.mark.parametrize("ret", [{"a": [1, 2]}, [1, "x"], "just a string", 7, True],
                         ids=["object", "list", "string", "number", "bool"])
def test_http_json_without_status_code_is_200(gw, runtime, ret):
    st, h, body = call(gw, f"/{runtime}", ret, http=True)
    assert st == 200
    assert h["content-type"] == "application/json"
    assert json.loads(body) == ret


@pytest.mark.parametrize("runtime", ["inline", "process"])
def test_http_cookies_and_headers(gw, runtime):
    ret = {"statusCode": 201, "headers": {"x-a": "1", "content-type": "text/plain"},
           "cookies": ["a=1; Path=/", "b=2"], "body": "made"}
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10)
    conn.request("POST", f"/{runtime}", json.dumps({"return": ret}), {"host": "http.test"})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    assert (r.status, body) == (201, b"made")
    assert r.getheader("x-a") == "1"
    assert sorted(v for k, v in r.getheaders() if k.lower() == "set-cookie") == ["a=1; Path=/", "b=2"]
