"""aws-lambda-powertools event handlers behind the gateway: APIGatewayRestResolver reads our
payload 1.0 events, APIGatewayHttpResolver our 2.0 events, and their responses come back
to the client as API Gateway would return them."""
from __future__ import annotations

import http.client
import json

import pytest

from .conftest import gateway

CONFIG = """
functions:
  pt_rest: {handler: pt_apps.rest_handler, code: "{fixtures}", runtime: process, timeout: 10s}
  pt_http: {handler: pt_apps.http_handler, code: "{fixtures}", runtime: inline, timeout: 10s}
apis:
  rest:
    type: rest
    binary_media_types: [application/octet-stream]
    stages:
      prod: {variables: {color: blue}}
    routes:
      - route: ANY /{proxy+}
        integration: {type: aws_proxy, function: pt_rest}
  httpapi:
    type: http
    host: http.test
    routes:
      - route: GET /items/{id}
        integration: {type: aws_proxy, function: pt_http}
      - route: $default
        integration: {type: aws_proxy, function: pt_http, payload_format: "2.0"}
"""


@pytest.fixture(scope="module")
def gw():
    g = gateway(CONFIG)
    yield g
    g.stop()


def raw_request(gw, method, path, body=None, headers=()):
    """http.client with repeated headers allowed (a list of pairs)."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
    try:
        has_host = any(k.lower() == "host" for k, _ in headers)
        conn.putrequest(method, path, skip_host=has_host, skip_accept_encoding=True)
        for k, v in headers:
            conn.putheader(k, v)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()


def header_values(headers, name):
    return [v for k, v in headers if k.lower() == name]


HTTP = [("Host", "http.test")]


def test_rest_path_query_headers_cookies(gw):
    st, hdrs, body = raw_request(gw, "GET", "/prod/items/42?a=1&a=2&b=x%20y",
                                 headers=[("X-Custom", "hello"), ("Cookie", "session=abc; theme=dark")])
    assert st == 200, body
    d = json.loads(body)
    assert d["item_id"] == "42"
    assert d["path_parameters"] == {"proxy": "items/42"}
    assert d["query"] == {"a": "2", "b": "x y"}
    assert d["multi_query"] == {"a": ["1", "2"], "b": ["x y"]}
    assert d["custom_header"] == "hello"
    assert d["cookies"] == "session=abc; theme=dark"
    assert d["stage"] == "prod"
    assert d["stage_variables"] == {"color": "blue"}
    assert d["method"] == "GET"
    assert d["path"] == "/items/42"
    assert d["source_ip"] == "127.0.0.1"
    assert header_values(hdrs, "content-type") == ["application/json"]


def test_http_path_query_headers_cookies(gw):
    st, hdrs, body = raw_request(gw, "GET", "/items/42?a=1&a=2&b=x%20y",
                                 headers=HTTP + [("X-Custom", "hello"), ("Cookie", "session=abc; theme=dark")])
    assert st == 200, body
    d = json.loads(body)
    assert d["item_id"] == "42"
    assert d["path_parameters"] == {"id": "42"}
    assert d["query"] == {"a": "1,2", "b": "x y"}
    assert d["multi_query"] == {"a": ["1", "2"], "b": ["x y"]}
    assert d["custom_header"] == "hello"
    assert d["cookies"] == ["session=abc", "theme=dark"]
    assert d["stage"] == "$default"
    assert not d["stage_variables"]
    assert d["path"] == "/items/42"
    assert d["source_ip"] == "127.0.0.1"


@pytest.mark.parametrize("prefix,extra", [("/prod", []), ("", HTTP)], ids=["rest", "http"])
def test_json_body_status_headers_cookies(gw, prefix, extra):
    payload = json.dumps({"name": "thing", "n": [1, 2]}).encode()
    st, hdrs, body = raw_request(gw, "POST", prefix + "/items", payload,
                                 extra + [("Content-Type", "application/json")])
    assert st == 201, body
    assert json.loads(body) == {"created": {"name": "thing", "n": [1, 2]}}
    assert header_values(hdrs, "x-item") == ["yes"]
    cookies = sorted(header_values(hdrs, "set-cookie"))
    assert [c.split(";")[0] for c in cookies] == ["session=abc", "theme=dark"]


@pytest.mark.parametrize("prefix,extra", [("/prod", []), ("", HTTP)], ids=["rest", "http"])
def test_binary_body_round_trip(gw, prefix, extra):
    data = bytes(range(256)) * 4
    st, hdrs, body = raw_request(gw, "POST", prefix + "/binary", data,
                                 extra + [("Content-Type", "application/octet-stream")])
    assert st == 200, body
    assert body == data[::-1]
    assert header_values(hdrs, "content-type") == ["application/octet-stream"]


def test_rest_unknown_route_is_the_apps_404(gw):
    st, _, body = raw_request(gw, "GET", "/prod/nothing/here")
    assert st == 404
    assert json.loads(body)["statusCode"] == 404     # powertools' own not-found document


@pytest.mark.parametrize("prefix,extra,status,message", [
    ("/prod", [], 502, "Internal server error"),
    ("", HTTP, 500, "Internal Server Error"),
], ids=["rest", "http"])
def test_handler_exception_is_function_error(gw, prefix, extra, status, message):
    st, _, body = raw_request(gw, "GET", prefix + "/fail", headers=extra)
    assert st == status
    assert json.loads(body) == {"message": message}
    assert b"secret-123" not in body
    assert "handler exploded with secret-123" in gw.logs()   # the traceback is in the function log
