"""gwcore.h1scan's lane functions (scan_lane, lane_key, lane_head, relay), both twins.

``lane_head`` writes the upstream request head for a forwarded request straight from the
client's raw head. It must give exactly the bytes of the general path it stands for:
``h1client.encode_head(method, target, outgoing_headers(headers, ...), body_framing(method))``
on what ``scan_request`` makes of the same head. ``scan_lane`` must take exactly what
``scan_request`` takes, find a lane by the key ``lane_key`` writes, and otherwise give
scan_request's answer. ``relay`` writes a client's whole answer from a whole upstream
response: it must be the bytes Exchange.response_lines writes for scan_response_block's
view of the same response. Checked on corpora and on seeded mutations of them.
"""
from __future__ import annotations

import random

import pytest

import gwcore
from tests.h1wire import HEADER_LINES, mutate
from tests.gwcore.test_h1scan import (ACCEPTED_REQUESTS, ACCEPTED_RESPONSES, REJECTED_REQUESTS,
                                     REJECTED_RESPONSES, _params_values)

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


def test_lane_head_after_scan_lane():
    """scan_lane keeps its scan of the head it found a lane for, for the lane_head that
    follows on the same bytes: lane_head gives the same bytes that way, on a copy, and
    after a scan_lane of another head (whose scan it must not use)."""
    taken = [d for d in CORPUS[:7] if TWINS[0][1].scan_request(d, LIMIT) is not None]
    assert len(taken) >= 5
    pure = dict(TWINS)["python"]
    for _, mod in TWINS:
        for a in taken:
            ra = mod.scan_request(a, LIMIT)
            for b in taken:
                rb = mod.scan_request(b, LIMIT)
                args = ARGS[1] + (h1client.body_framing(rb[0]),)
                want = pure.lane_head(b, *args)
                assert mod.scan_lane(b, LIMIT, {mod.lane_key(rb[0], rb[1], rb[4]): "L"}) == ("L", rb[5])
                assert mod.lane_head(b, *args) == want              # scan_lane's own scan
                copy = bytes(bytearray(b))
                assert mod.scan_lane(a, LIMIT, {mod.lane_key(ra[0], ra[1], ra[4]): "L"}) == ("L", ra[5])
                assert mod.lane_head(copy, *args) == want           # another head's scan kept
                assert mod.lane_head(b, *args) == want


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


def mutants(seed: int, seeds: list, rounds: int, most: int, lines=None):
    """``rounds`` seeded mutants of ``seeds``: each 1 to ``most`` mutations of one of them
    (tests.h1wire.mutate, with ``lines`` as its header lines when given)."""
    rng = random.Random(seed)
    extra = () if lines is None else (lines,)
    for _ in range(rounds):
        data = rng.choice(seeds)
        for _ in range(rng.randrange(1, most + 1)):
            data = mutate(rng, data, seeds, *extra)
        yield data


def test_seeded_mutations():
    taken = sum(check(data) for data in mutants(7, CORPUS[:7], 6000, 3, EXTRA_LINES))
    assert taken > 1000          # the mutations keep many inputs takeable


# -- relay -------------------------------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\n"
DATE = b"date: Wed, 02 Dec 2026 16:00:00 GMT\r\n"
RID_LINE = b"x-request-id: "
RID = "0b6f5e0e-3c1a-4b8e-9d6c-2f1f0e0d0c0b"

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 06 May 2024 10:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}",
    b"HTTP/1.1 200 Fine\r\nX-A: b\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\nTE: x\r\n\r\nabc",
    b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno",
    b"HTTP/1.1 200 OK\r\nContent-Length: 65535\r\n\r\n" + b"x" * 65535,
    b"HTTP/1.1 200 OK\r\nContent-Length: 65536\r\n\r\n" + b"x" * 65536,
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
] + _params_values(ACCEPTED_RESPONSES) + _params_values(REJECTED_RESPONSES)


def relay_reference(data: bytes, close: bool):
    """What the block-mode path writes: Exchange.response_lines' parts through answer()."""
    pure = dict(TWINS)["python"]
    r = pure.scan_response_block(data)
    if r is None or r[0] != 200 or r[3] > 65535:
        return None
    status, block, has_date, cl, keep, start = r
    return (pure.answer((OK, b"" if has_date else DATE, block, RID_LINE, RID.encode(), b"\r\n"),
                        data[start:], close), keep)


def check_relay(data: bytes) -> int:
    taken = 0
    for close in (False, True):
        want = relay_reference(data, close)
        for _, mod in TWINS:
            assert mod.relay(data, OK, DATE, RID_LINE, RID, close) == want, (data[:200], close)
        taken += want is not None
    return taken


@pytest.mark.parametrize("data", RESPONSES)
def test_relay_corpus(data):
    check_relay(data)


def test_relay_exact():
    for _, mod in TWINS:
        assert mod.relay(RESPONSES[0], OK, DATE, RID_LINE, RID, False) == (
            b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Mon, 06 May 2024 10:00:00 GMT\r\n"
            b"Content-Type: application/json\r\nx-request-id: " + RID.encode() +
            b"\r\ncontent-length: 2\r\n\r\n{}", True)
        # no Date upstream: the gateway's; the upstream's close is reported, not forwarded
        assert mod.relay(RESPONSES[2], OK, DATE, RID_LINE, RID, True) == (
            OK + DATE + b"x-request-id: " + RID.encode() +
            b"\r\ncontent-length: 3\r\nconnection: close\r\n\r\nabc", False)
        assert mod.relay(RESPONSES[3], OK, DATE, RID_LINE, RID, False) is None     # not 200
        assert mod.relay(RESPONSES[6], OK, DATE, RID_LINE, RID, False) is None     # 64 KiB
        assert mod.relay(RESPONSES[0], OK, DATE, RID_LINE, "\u20ac", False) is None


def test_relay_seeded_mutations():
    taken = sum(check_relay(data) for data in mutants(11, RESPONSES[:3], 4000, 2))
    assert taken > 500
