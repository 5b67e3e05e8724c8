"""gwcore.h1client (the upstream client and the header rules) compiled and as its pure-Python twin.

The module is compiled from the very same source in Cython's pure-Python mode (C types from
gwcore/h1client.pxd); these tests check that both builds give the same answers, and run the
whole upstream suite on the twin.
"""
import os

import pytest

import gwcore
from tests.helpers import assert_suite_passes_pure

TWINS = gwcore.twins("h1client")
IDS = [name for name, _ in TWINS]


def test_compiled_build_is_used_in_ci():
    kinds = dict(TWINS)
    assert kinds["python"].__file__.endswith("_h1client_py.py")
    if os.environ.get("CI") == "true":
        assert "cython" in kinds
        assert gwcore.load("h1client").__file__.endswith(".so")


CLIENT_HEADERS = [
    [("host", "gw.example"), ("user-agent", "curl"), ("accept", "*/*")],
    [("host", "gw"), ("connection", "keep-alive, X-Secret"), ("x-secret", "s"), ("te", "trailers"),
     ("x-forwarded-for", "10.0.0.1"), ("x-forwarded-for", "10.0.0.2"), ("content-length", "3"),
     ("x-forwarded-host", "evil"), ("forwarded", "for=1.2.3.4"), ("keep-alive", "timeout=5"),
     ("x-keep", "1")],
    [("connection", "x-forwarded-for"), ("x-forwarded-for", "6.6.6.6"), ("upgrade", "h2c"),
     ("proxy-authorization", "Basic x"), ("transfer-encoding", "chunked")],
    [],
]


@pytest.mark.parametrize("headers", CLIENT_HEADERS)
@pytest.mark.parametrize("name,mod", TWINS, ids=IDS)
def test_outgoing_headers(name, mod, headers):
    out = mod.outgoing_headers(headers, "up:8080", "127.0.0.9", "http", "8443")
    names = [k for k, _ in out]
    # what the gateway sets comes last, once each
    assert names[-4:] == ["host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-port"]
    assert names.count("host") == 1 and names.count("x-forwarded-for") == 1
    for hop in ("connection", "keep-alive", "te", "upgrade", "proxy-authorization", "transfer-encoding",
                "content-length", "x-forwarded-host", "forwarded", "x-secret"):
        assert hop not in names
    assert dict(out)["host"] == "up:8080"
    xff = dict(out)["x-forwarded-for"]
    if headers is CLIENT_HEADERS[1]:
        assert xff == "10.0.0.1, 10.0.0.2, 127.0.0.9"
        assert ("x-keep", "1") in out
    else:
        # no chain, or the client named X-Forwarded-For in Connection: only the peer
        assert xff == "127.0.0.9"
    # both builds agree exactly
    assert out == dict(TWINS)["python"].outgoing_headers(headers, "up:8080", "127.0.0.9", "http", "8443")


@pytest.mark.parametrize("name,mod", TWINS, ids=IDS)
def test_strip_response(name, mod):
    headers = [("Server", "nginx"), ("Content-Length", "5"), ("Connection", "keep-alive, X-Internal"),
               ("X-Internal", "secret"), ("Keep-Alive", "timeout=5"), ("Transfer-Encoding", "chunked"),
               ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Proxy-Authenticate", "Basic")]
    assert mod.strip_response(headers) == [("Server", "nginx"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    assert mod.strip_response([]) == []


@pytest.mark.parametrize("name,mod", TWINS, ids=IDS)
def test_encode_head_refuses_injection(name, mod):
    ok = mod.encode_head("GET", "/a?b=1", [("x", "1"), ("Content-Length", "9")], "Content-Length: 0\r\n")
    assert ok == b"GET /a?b=1 HTTP/1.1\r\nx: 1\r\nContent-Length: 0\r\n\r\n"
    for bad in ([("x", "1\r\nevil: 1")], [("x\n", "1")]):
        with pytest.raises(ValueError):
            mod.encode_head("GET", "/", bad, "")
    with pytest.raises(ValueError):
        mod.encode_head("GET", "/a b", [], "")
    with pytest.raises(ValueError):
        mod.encode_head("GE T", "/", [], "")


@pytest.mark.slow
def test_upstream_suite_passes_on_the_pure_twin():
    assert_suite_passes_pure("tests/proxy/test_upstream.py")


@pytest.mark.slow
def test_callback_suite_passes_on_the_pure_twin():
    assert_suite_passes_pure("tests/proxy/test_upstream_callback.py")
