"""gwcore.h1scan's lane functions (scan_lane, lane_key, lane_head), both twins.

``lane_head`` writes the upstream request head for a forwarded request straight from the
client's raw head. It must give exactly the bytes of the general path it stands for:
``h1client.encode_head(method, target, outgoing_headers(headers, ...), body_framing(method))``
on what ``scan_request`` makes of the same head. ``scan_lane`` must take exactly what
``scan_request`` takes, find a lane by the key ``lane_key`` writes, and otherwise give
scan_request's answer. Checked on a corpus and on seeded mutations of it.
"""
from __future__ import annotations

import random

import pytest

import gwcore
from tests.h1wire import HEADER_LINES, mutate
from tests.gwcore.test_h1scan import ACCEPTED_REQUESTS, REJECTED_REQUESTS, _params_values

TWINS = gwcore.twins("h1scan")
h1client = gwcore.load("h1client")
LIMIT = 16384

EXTRA_LINES = HEADER_LINES + [
    b"X-Forwarded-For: 10.0.0.1", b"x-forwarded-for: 10.0.0.2, 10.0.0.3", b"Forwarded: for=x",
    b"X-Forwarded-Host: h", b"X-Forwarded-Port: 1", b"X-Forwarded-Proto: https", b"close: x",
    b"Proxy-Authorization: Basic x", b"Trailer: x", b"HOST: second", b"Cookie: a=b; c=d",
]

CORPUS = [
    b"GET /b/pets/1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    b"GET /b/pets/1?x=1&y=%20 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nclose: yes\r\n\r\n",
    b"POST /b/p/orders HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nX-Forwarded-For: 1.2.3.4\r\n"
    b"x-forwarded-for: 5.6.7.8\r\nX-Trace: abc\r\nTE: trailers\r\nKeep-Alive: timeout=9\r\n\r\n",
    b"DELETE /x? HTTP/1.1\r\nHost: gw\r\nFORWARDED: for=1\r\nX-Forwarded-Proto: https\r\n\r\n",
    b"PATCH /x?a HTTP/1.1\r\nConnection: keep-alive\r\n\r\n",
    b"OPTIONS /x HTTP/1.1\r\nHost: a\r\nHost: b\r\nAccept: text/html\r\n\r\n",
    b"HEAD /x HTTP/1.1\r\nhost:nospace\r\nX-A:\tb c\r\n\r\n",
    b"PUT /x HTTP/1.1\r\nHost: gw\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(260)) + b"\r\n",
] + _params_values(ACCEPTED_REQUESTS) + _params_values(REJECTED_REQUESTS)

ARGS = [
    ("/pets/1", "", "up:9000", "127.0.0.1", "8080"),
    ("/pets/7", "fixed=1", "gw", "::1", "80"),
    ("/a%20b/c", "a=b&c", "10.0.0.9:81", "192.168.1.1", "443"),
]


def reference(data: bytes, path: str, fq: str, host: str, peer: str, port: str):
    """The general path's bytes (what the app and the lists path write)."""
    r = TWINS[0][1].scan_request(data, 1 << 62)
    if r is None:
        return None
    method, _, query, headers, _, _ = r
    q = fq + "&" + query if fq and query else fq or query
    target = path + "?" + q if q else path
    return h1client.encode_head(method, target,
                                h1client.outgoing_headers(headers, host, peer, "http", port),
                                h1client.body_framing(method))


def check(data: bytes) -> int:
    """Both twins against the reference and each other for one input; 1 when taken."""
    taken = 0
    scans = [mod.scan_request(data, LIMIT) for _, mod in TWINS]
    assert all(s == scans[0] for s in scans), data
    r = scans[0]
    for _, mod in TWINS:
        got = mod.scan_lane(data, LIMIT, {})
        assert got == r, data                         # no lanes: scan_request's answer
        if r is not None:
            key = mod.lane_key(r[0], r[1], r[4])
            assert mod.scan_lane(data, LIMIT, {key: "L"}) == ("L", r[5])
            assert mod.scan_lane(data, LIMIT, {key + b"x": "L"}) == r
    for args in ARGS:
        heads = [mod.lane_head(data, *args, h1client.body_framing(r[0]) if r else "")
                 for _, mod in TWINS]
        assert heads[0] == heads[-1], data
        if r is None:
            assert heads[0] is None
            continue
        if len(r[3]) > 256:
            assert heads[0] is None                   # the lists path takes those
            continue
        assert heads[0] == reference(data, *args), (data, args)
        taken = 1
    return taken


def test_both_twins_present():
    assert [name for name, _ in TWINS][-1] == "python"


def test_request_drop_names_agree_with_h1client():
    pure = dict(TWINS)["python"]
    assert pure._REQUEST_DROP == h1client.REQUEST_DROP


@pytest.mark.parametrize("data", CORPUS)
def test_corpus(data):
    check(data)


def test_wrk_request_exact():
    for _, mod in TWINS:
        head = mod.lane_head(CORPUS[0], "/pets/1", "", "up:9000", "127.0.0.1", "8080", "")
        assert head == (b"GET /pets/1 HTTP/1.1\r\nuser-agent: wrk\r\naccept: */*\r\nhost: up:9000\r\n"
                        b"x-forwarded-for: 127.0.0.1\r\nx-forwarded-proto: http\r\n"
                        b"x-forwarded-port: 8080\r\n\r\n")
        assert mod.lane_key("GET", "/b/pets/1", "127.0.0.1:8080") == b"GET /b/pets/1 127.0.0.1:8080"


def test_not_latin1_is_declined():
    for _, mod in TWINS:
        assert mod.lane_head(CORPUS[0], "/p\u20ac", "", "h", "p", "1", "") is None


def test_seeded_mutations():
    rng = random.Random(7)
    seeds = CORPUS[:7]
    taken = 0
    for _ in range(6000):
        data = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            data = mutate(rng, data, seeds, EXTRA_LINES)
        taken += check(data)
    assert taken > 1000          # the mutations keep many inputs takeable
