"""The inline request path's fast paths give exactly what the plain ways give.

- events: ``event_v1`` / ``event_v2`` (one dict literal, a copied identity template, cached
  protocol strings, the request-time cache read inline) against the builders as they were
  before, kept here verbatim as the reference, on random requests: the same JSON, byte for
  byte (key order included);
- responses: ``_v1``'s shortcut for ``{statusCode, headers, body}`` (and its cache of header
  name classes) against the general ``_v1_any``, on random results: the same status,
  headers and body, or the same refusal;
- the log block of a warm call without output (``FunctionLog.record_plain``: prefixed
  text written, unprefixed block made on demand) against ``FunctionLog.record``.
"""
from __future__ import annotations

import os

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.context import Request, new_request_id
from proxy.functions import events, responses
from proxy.functions.events import RouteConsts, encode_body, event_v1, event_v2, parse_query, request_time
from proxy.functions.invocation import FunctionLog, Result
from proxy.functions.spec import ACCOUNT_ID

# ----------------------------------------------------------------------------- reference events


def _ref_event_v1(req, body, binary_types, resource, stage_vars, consts=None):
    if consts is None:
        consts = RouteConsts.of(req)
    headers: dict = {}
    mv_headers: dict = {}
    for k, v in req.headers:
        headers[k] = v
        lst = mv_headers.get(k)
        if lst is None:
            mv_headers[k] = [v]
        else:
            lst.append(v)
    qp = None
    mvq = None
    if req.query:
        pairs = parse_query(req.query)
        if pairs:
            qp, mvq = {}, {}
            for k, v in pairs:
                qp[k] = v
                mvq.setdefault(k, []).append(v)
    api_type = consts.api_type
    if body:
        ct = mv_headers.get("content-type")
        text, b64 = encode_body(body, ct[0] if ct else None, api_type, binary_types)
    else:
        text, b64 = None, False
    api_id = consts.api_id
    domain, prefix = events._domain(req)
    stage = req.stage
    method = req.method
    t = req.start_time
    ua = mv_headers.get("user-agent")
    p = req.path
    rest = p[consts.cut:] if consts.cut else p
    ev = {
        "resource": resource,
        "path": rest or "/",
        "httpMethod": method,
        "headers": headers or None,
        "multiValueHeaders": mv_headers or None,
        "queryStringParameters": qp,
        "multiValueQueryStringParameters": mvq,
        "pathParameters": dict(req.path_params) if req.path_params else None,
        "stageVariables": dict(stage_vars) if stage_vars else None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": api_id,
            "domainName": domain,
            "domainPrefix": prefix,
            "extendedRequestId": req.request_id,
            "httpMethod": method,
            "identity": {
                "accessKey": None, "accountId": None, "caller": None,
                "cognitoAuthenticationProvider": None, "cognitoAuthenticationType": None,
                "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
                "principalOrgId": None, "sourceIp": req.client_ip, "user": None,
                "userAgent": ua[0] if ua else None, "userArn": None,
                "clientCert": None, "apiKey": req.api_key, "apiKeyId": None,
            },
            "path": req.path,
            "protocol": "HTTP/" + (req.http_version or "1.1"),
            "requestId": req.request_id,
            "requestTime": request_time(t),
            "requestTimeEpoch": int(t * 1000),
            "resourceId": None,
            "resourcePath": resource,
            "stage": stage.name if stage is not None else "$default",
        },
        "body": text,
        "isBase64Encoded": b64,
    }
    if api_type == "http":
        ev = {"version": "1.0", **ev}
    if req.auth_context is not None:
        ev["requestContext"]["authorizer"] = req.auth_context
    return ev


def _ref_event_v2(req, body, binary_types, route_key, stage_vars, consts=None):
    api_id = consts.api_id if consts is not None else events._api_id(req)
    headers: dict = {}
    cookies = None
    for k, v in req.headers:
        if k == "cookie":
            if cookies is None:
                cookies = []
            cookies.extend(c.strip() for c in v.split(";") if c.strip())
            continue
        prev = headers.get(k)
        headers[k] = v if prev is None else prev + "," + v
    domain, prefix = events._domain(req)
    t = req.start_time
    query = req.query
    path = req.path
    ev = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": query or "",
    }
    if cookies:
        ev["cookies"] = cookies
    ev["headers"] = headers
    if query:
        qp: dict = {}
        for k, v in parse_query(query):
            prev = qp.get(k)
            qp[k] = v if prev is None else prev + "," + v
        if qp:
            ev["queryStringParameters"] = qp
    ua = headers.get("user-agent", "")
    if "," in ua:
        ua = req.header("user-agent", "")
    stage = req.stage
    ctx = {
        "accountId": ACCOUNT_ID,
        "apiId": api_id,
        "domainName": domain,
        "domainPrefix": prefix,
        "http": {
            "method": req.method,
            "path": path,
            "protocol": "HTTP/" + (req.http_version or "1.1"),
            "sourceIp": req.client_ip,
            "userAgent": ua,
        },
        "requestId": req.request_id,
        "routeKey": route_key,
        "stage": stage.name if stage is not None else "$default",
        "time": request_time(t),
        "timeEpoch": int(t * 1000),
    }
    if req.auth_context is not None:
        ctx["authorizer"] = req.auth_context
    ev["requestContext"] = ctx
    if body:
        ct = headers.get("content-type")
        if ct is not None and "," in ct:
            ct = req.header("content-type")
        text, b64 = encode_body(body, ct, "http", binary_types)
        if text is not None:
            ev["body"] = text
    else:
        b64 = False
    if req.path_params:
        ev["pathParameters"] = dict(req.path_params)
    ev["isBase64Encoded"] = b64
    if stage_vars:
        ev["stageVariables"] = dict(stage_vars)
    return ev


# ----------------------------------------------------------------------------- random requests

class Api:
    def __init__(self, type_, cfg, base_path):
        self.type = type_
        self.name = "shop"
        self.cfg = cfg
        self.base_path = base_path


class Stage:
    def __init__(self, name, prefix):
        self.name = name
        self.prefix = prefix


_names = st.sampled_from(["host", "user-agent", "content-type", "cookie", "accept", "x-m", "x-amz-date"])
_values = st.sampled_from(["", "a", "a, b", "curl/8", "application/json", "text/plain; charset=utf-8",
                           "image/png", "a=1; b=2", " ; c=3", "é", "x,y"])
_queries = st.sampled_from(["", "a=1", "a=1&a=2&b=x%20y", "&", "=", "a", "k=%E2%82%AC&k=+", "x=1&&y="])
_bodies = st.sampled_from([b"", b'{"k": 1}', b"hello", bytes(range(200)), "é".encode(), b"\xff\xfe"])


@st.composite
def requests(draw):
    api_type = draw(st.sampled_from(["rest", "http"]))
    base = draw(st.sampled_from(["", "/base"]))
    stage = draw(st.sampled_from([None, Stage("prod", "/prod"), Stage("$default", "")]))
    prefix = stage.prefix if stage is not None else ""
    rest = draw(st.sampled_from(["", "/", "/items/7", "/a%20b/c"]))
    host = draw(st.sampled_from(["api.example.com:8080", "", ":80", "h.test", "x.y.z"]))
    r = Request(None, draw(st.sampled_from(["GET", "POST", "DELETE"])), base + prefix + rest,
                draw(_queries), draw(st.lists(st.tuples(_names, _values), max_size=6)),
                draw(st.sampled_from(["10.0.0.1", "::1"])), "10.0.0.1", "http", host,
                draw(st.sampled_from(["1.1", "1.0", "2", None, ""])), new_request_id(), 0,
                draw(st.sampled_from([1700000000.25, 1700000000.999, 1700000001.0, 0.0, 86399.5])), 1 << 20)
    r.api = Api(api_type, draw(st.sampled_from([{}, {"id": "abc123"}])), base)
    r.stage = stage
    r.path_params = draw(st.sampled_from([{}, {"id": "7"}, {"proxy": "a/b"}]))
    r.api_key = draw(st.sampled_from([None, "key-1"]))
    r.auth_context = draw(st.sampled_from([None, {"principalId": "u1"}, {}]))
    return r


ARGS = dict(body=_bodies, binary=st.sampled_from([(), ("image/*",), ("*/*",)]),
            stage_vars=st.sampled_from([{}, {"v": "1"}]), with_consts=st.booleans())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=requests(), **ARGS)
def test_event_v1_is_the_reference(req, body, binary, stage_vars, with_consts):
    consts = RouteConsts.of(req) if with_consts else None
    for _ in range(2):        # the second time from the caches
        got = event_v1(req, body, binary, "/items/{id}", stage_vars, consts)
        want = _ref_event_v1(req, body, binary, "/items/{id}", stage_vars, consts)
        assert orjson.dumps(got) == orjson.dumps(want)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(req=requests(), **ARGS)
def test_event_v2_is_the_reference(req, body, binary, stage_vars, with_consts):
    consts = RouteConsts.of(req) if with_consts else None
    for _ in range(2):
        got = event_v2(req, body, binary, "GET /items/{id}", stage_vars, consts)
        want = _ref_event_v2(req, body, binary, "GET /items/{id}", stage_vars, consts)
        assert orjson.dumps(got) == orjson.dumps(want)


def test_events_are_fresh_objects_per_request():
    """A handler may change its event: nothing of it is shared with the next one."""
    req = Request(None, "GET", "/prod/x", "", [("user-agent", "u")], "1.2.3.4", "1.2.3.4", "http",
                  "h.test", "1.1", "r1", 0, 1700000000.0, 1 << 20)
    req.api, req.stage, req.path_params = Api("rest", {}, ""), Stage("prod", "/prod"), {"id": "1"}
    sv = {"v": "1"}
    a = event_v1(req, b"", (), "/x", sv)
    a["requestContext"]["identity"]["sourceIp"] = "changed"
    a["pathParameters"]["id"] = "changed"
    a["stageVariables"]["v"] = "changed"
    b = event_v1(req, b"", (), "/x", sv)
    assert b["requestContext"]["identity"]["sourceIp"] == "1.2.3.4"
    assert b["pathParameters"] == {"id": "1"} and b["stageVariables"] == {"v": "1"}
    assert events._IDENTITY["sourceIp"] is None and req.path_params == {"id": "1"} and sv == {"v": "1"}


# ----------------------------------------------------------------------------- responses

_hnames = st.sampled_from(["content-type", "Content-Type", "CONTENT-LENGTH", "x-a", "X-A", "Connection",
                           "set-cookie", "transfer-encoding", "te", "x-b", 1])
_hvals = st.one_of(st.sampled_from(["v", "", "text/html", "a,b"]), st.integers(-5, 5), st.booleans(),
                   st.none(), st.floats(allow_nan=False, width=32), st.lists(st.just("x"), max_size=1))
_status = st.one_of(st.sampled_from([200, 204, 301, 404, 502, 99, 100, 599, 600]), st.just("200"),
                    st.just(True), st.just(200.0))
_body = st.one_of(st.sampled_from(["", "hello", "é\u2028", "aGVsbG8=", "@@"]), st.none(), st.integers(0, 2),
                  st.just({"a": 1}), st.just("\ud800"))
_results = st.one_of(
    st.fixed_dictionaries({"statusCode": _status, "headers": st.dictionaries(_hnames, _hvals, max_size=4),
                           "body": _body}),
    st.fixed_dictionaries({"statusCode": _status, "headers": st.one_of(st.none(), st.just(["a"]), st.just("x")),
                           "body": _body}),
    st.fixed_dictionaries({"statusCode": _status, "body": _body},
                          optional={"headers": st.dictionaries(_hnames, _hvals, max_size=3),
                                    "multiValueHeaders": st.dictionaries(_hnames, st.lists(_hvals, max_size=2),
                                                                         max_size=2),
                                    "isBase64Encoded": st.one_of(st.booleans(), st.none(), st.just("yes")),
                                    "cookies": st.just(["a=1"])}),
    st.sampled_from([None, [], "x", 3]),
)


def _outcome(fn, d, api_type):
    try:
        r = fn(d, api_type)
    except responses.Malformed:
        return "malformed"
    except (TypeError, ValueError, AttributeError):
        return "error"
    return r.status, r.headers, r.body


@settings(max_examples=1500, deadline=None)
@given(d=_results, api_type=st.sampled_from(["rest", "http"]))
def test_v1_response_shortcut_is_the_general_path(d, api_type):
    assert _outcome(responses._v1, d, api_type) == _outcome(responses._v1_any, d, api_type)
    # and again, with the header names' classes cached
    assert _outcome(responses._v1, d, api_type) == _outcome(responses._v1_any, d, api_type)


def test_header_name_cache_is_bounded(monkeypatch):
    monkeypatch.setattr(responses, "_NAMES", {})
    for i in range(responses._NAMES_MAX * 2 + 3):
        d = {"statusCode": 200, "headers": {f"x-h{i}": "1", "Content-Length": "3"}, "body": "abc"}
        r = responses._v1(d, "rest")
        assert r.headers == [(f"x-h{i}", "1"), ("content-type", "application/json")]
        assert len(responses._NAMES) <= responses._NAMES_MAX


# ----------------------------------------------------------------------------- log block

def _read_all(fd):
    chunks = []
    while True:
        try:
            b = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks).decode()


def _ref_block(rid, duration_ms, max_mb, init_ms=None, status=None, memory_mb=256):
    """The block without output as it was written before the templates."""
    import math
    billed = math.ceil(duration_ms)
    rep = (f"REPORT RequestId: {rid}\tDuration: {duration_ms:.2f} ms\tBilled Duration: "
           f"{billed if billed > 1 else 1} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: {max_mb or 0} MB\t")
    if init_ms is not None:
        rep += f"Init Duration: {init_ms:.2f} ms\t"
    if status:
        rep += f"Status: {status}\t"
    return f"START RequestId: {rid} Version: $LATEST\nEND RequestId: {rid}\n{rep}\n"


@pytest.mark.parametrize("init_ms,status", [(None, None), (12.345, None), (None, "timeout"), (3.0, "error")])
@pytest.mark.parametrize("duration,max_mb", [(0.1234, 42), (1.5, 0), (0.005, None), (1234.567, 100000), (2, 7)])
def test_log_block_is_the_reference(duration, max_mb, init_ms, status):
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        name = "f % {x}"
        log = FunctionLog(name, 256, fd=w)
        rid = new_request_id()
        want = _ref_block(rid, duration, max_mb, init_ms, status)
        assert log.record(rid, "", duration, max_mb, init_ms, status) == want
        assert _read_all(r) == "".join(f"[function {name}] {line}\n" for line in want.splitlines())
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("name", ["fn_a", "with % and {braces}", "é"])
@pytest.mark.parametrize("duration,max_mb", [(0.1234, 42), (1.5, 0), (0.0, None), (1234.567, 100000)])
def test_plain_log_block_is_what_record_writes(name, duration, max_mb):
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        log = FunctionLog(name, 256, fd=w)
        rid = new_request_id()
        block = log.record(rid, "", duration, max_mb)
        written = _read_all(r)
        res = Result({})
        log.record_plain(res, rid, duration, max_mb)
        assert _read_all(r) == written
        assert res.log == block
        assert res.log == block       # made once, kept
        res.log = "replaced"
        assert res.log == "replaced"
        # an id that is not printable: the general path, same text as record
        odd = "a\u2028b\nc"
        block = log.record(odd, "", duration, max_mb)
        written = _read_all(r)
        res = Result({})
        log.record_plain(res, odd, duration, max_mb)
        assert _read_all(r) == written and res.log == block
    finally:
        os.close(r)
        os.close(w)
