"""The per-invocation pieces the inline fast path made cheaper give the same results as
the plain way: events built with a route's precomputed parts, the cached request time
and domain, the START/END/REPORT block written without a split, request ids."""
from __future__ import annotations

import time
import uuid

import orjson
import pytest

from proxy.context import Request
from proxy.functions import events
from proxy.functions.events import RouteConsts, event_v1, event_v2, request_time
from proxy.context import new_request_id
from proxy.functions.invocation import FunctionLog


class Api:
    def __init__(self, type_, name="shop", cfg=None, base_path=""):
        self.type = type_
        self.name = name
        self.cfg = cfg or {}
        self.base_path = base_path


class Stage:
    def __init__(self, name, prefix):
        self.name = name
        self.prefix = prefix


def req(api, stage, headers, host="api.example.com:8080", query="a=1&a=2&b=x%20y"):
    r = Request(None, "POST", "/base/prod/items/7", query, headers, "10.0.0.1", "10.0.0.1", "http",
                host, "1.1", "req-1", 0, 1700000000.25, 1 << 20)
    r.api, r.stage, r.path_params = api, stage, {"id": "7"}
    return r


HEADERS = [
    [("host", "api.example.com"), ("user-agent", "curl/8"), ("content-type", "application/json")],
    [("user-agent", "a, b"), ("user-agent", "c"), ("content-type", "text/plain, x"),
     ("content-type", "application/json"), ("cookie", "a=1; b=2"), ("x-m", "1"), ("x-m", "2")],
    [],
]


@pytest.mark.parametrize("headers", HEADERS)
@pytest.mark.parametrize("api_type", ["rest", "http"])
@pytest.mark.parametrize("body", [b"", b'{"k": 1}', bytes(range(200))])
@pytest.mark.parametrize("host", ["api.example.com:8080", "", ":80"])
def test_events_with_route_consts_are_the_same(headers, api_type, body, host):
    api = Api(api_type, cfg={"id": "abc123"} if api_type == "http" else {}, base_path="/base")
    r = req(api, Stage("prod", "/prod"), headers, host)
    binary = ("application/octet-stream",)
    for _ in range(2):       # the second time from the caches
        a = event_v1(r, body, binary, "/items/{id}", {"v": "1"})
        b = event_v1(r, body, binary, "/items/{id}", {"v": "1"}, RouteConsts.of(r))
        assert orjson.dumps(a) == orjson.dumps(b)
        a = event_v2(r, body, binary, "POST /items/{id}", {})
        b = event_v2(r, body, binary, "POST /items/{id}", {}, RouteConsts.of(r))
        assert orjson.dumps(a) == orjson.dumps(b)
    ev = event_v1(r, body, binary, "/items/{id}", {})
    assert ev["path"] == "/items/7"
    if body or headers:
        ua = [v for k, v in headers if k == "user-agent"]
        assert ev["requestContext"]["identity"]["userAgent"] == (ua[0] if ua else None)
        assert event_v2(r, body, binary, "k", {})["requestContext"]["http"]["userAgent"] == (ua[0] if ua else "")


def test_first_header_value_when_joined_has_commas():
    r = req(Api("http"), None, HEADERS[1])
    ev = event_v2(r, b"hello", (), "$default", {})
    assert ev["requestContext"]["http"]["userAgent"] == "a, b"
    assert ev["headers"]["content-type"] == "text/plain, x,application/json"
    assert ev["body"] == "hello" and ev["isBase64Encoded"] is False    # by the first: text/plain


def test_request_time_cache_follows_the_clock():
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()

    def plain(t):
        g = time.gmtime(t)
        return f"{g.tm_mday:02d}/{months[g.tm_mon - 1]}/{g.tm_year}:{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} +0000"
    base = 1700000000.0
    for t in (base, base + 0.5, base + 0.999, base + 1, base + 1.5, base - 86400, base + 2, 0.0):
        assert request_time(t) == plain(t)


def test_domain_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(events, "_DOMAINS", {})
    for i in range(events._DOMAINS_MAX * 2 + 3):
        r = req(Api("rest"), None, [], host=f"h{i}.example.com:1")
        assert events._domain(r) == (f"h{i}.example.com", f"h{i}")
        assert len(events._DOMAINS) <= events._DOMAINS_MAX


class Captured(FunctionLog):
    __slots__ = ("texts",)

    def _write_text(self, text):
        self.texts.append(text)


@pytest.mark.parametrize("init_ms,status", [(None, None), (12.345, None), (None, "timeout"), (3.0, "error")])
def test_log_block_without_output_is_what_the_general_path_writes(init_ms, status):
    log = Captured("fn_a", 256)
    log.texts = []
    rid = new_request_id()
    block = log.record(rid, "", 0.1234, 42, init_ms, status)
    assert block == "\n".join([f"START RequestId: {rid} Version: $LATEST", f"END RequestId: {rid}",
                               block.splitlines()[2]]) + "\n"
    assert log.texts == ["".join(f"[function fn_a] {line}\n" for line in block.splitlines())]
    rep = block.splitlines()[2]
    assert rep.startswith(f"REPORT RequestId: {rid}\tDuration: 0.12 ms\tBilled Duration: 1 ms\t"
                          "Memory Size: 256 MB\tMax Memory Used: 42 MB\t")
    assert ("Init Duration: 12.35 ms\t" in rep) == (init_ms == 12.345)
    assert (f"Status: {status}\t" in rep) == bool(status)
    # with output: the general path, same framing
    log.texts = []
    block2 = log.record(rid, "hello\nworld\n", 0.1234, 42, init_ms, status)
    assert block2.splitlines()[1:3] == ["hello", "world"]
    assert log.texts == ["".join(f"[function fn_a] {line}\n" for line in block2.splitlines())]


def test_request_ids_are_uuid4():
    ids = {new_request_id() for _ in range(2000)}
    assert len(ids) == 2000
    for rid in list(ids)[:200]:
        u = uuid.UUID(rid)
        assert str(u) == rid and u.version == 4 and u.variant == uuid.RFC_4122
