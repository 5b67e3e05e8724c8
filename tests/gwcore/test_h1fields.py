"""gwcore.h1scan.fields on both twins, and the two head encoders that use it.

``fields`` is the fast path of ``gwcore.http1.encode_head`` (answers to clients) and
``gwcore.h1client.encode_head`` (requests to upstreams); each encoder keeps its general
path for what ``fields`` declines. Checked here: the twins agree; and for random header
lists (clean ones, and ones with CR/LF/NUL, non-latin-1 text, framing names in any case,
Date, non-str values) each encoder gives exactly what its general path gives (the fast
path switched off by replacing the module's ``_fields``)."""
from __future__ import annotations

import random

import pytest

import gwcore

SCAN = gwcore.twins("h1scan")
HTTP1 = gwcore.twins("http1")
H1CLIENT = gwcore.twins("h1client")

NAMES = ["a", "X-Id", "content-type", "Content-Length", "TRANSFER-ENCODING", "connection",
         "Keep-Alive", "date", "Date", "Set-Cookie", "x-a\r\nb", "é", "x\0y", "host"]
VALUES = ["", "1", "v with spaces", "a\r\nSet-Cookie: x", "tab\there", "café", "€uro",
          "nul\0", "x" * 300, 5]


def random_headers(rng: random.Random) -> list:
    return [(rng.choice(NAMES), rng.choice(VALUES)) for _ in range(rng.randrange(0, 8))]


def clean(h: list) -> bool:
    return all(type(v) is str and not any(c in k + v for c in "\r\n\0")
               and max(k + v + " ") <= "\xff" for k, v in h)


def test_fields_examples():
    for name, mod in SCAN:
        assert mod.fields([("A", "b"), ("Content-Length", "5"), ("DATE", "x")],
                          ("content-length",), "date") == (b"A: b\r\nDATE: x\r\n", True), name
        assert mod.fields([("a", "b\r\nc: d")], (), None) is None
        assert mod.fields([("a", 1)], (), None) is None
        assert mod.fields([["a", "b"]], (), None) is None
        assert mod.fields([("\xe9", "\xfc")], (), None) == (b"\xe9: \xfc\r\n", False)
        assert mod.fields([("a", "\u20ac")], (), None) is None
        assert mod.fields([("a", "b")] * 257, (), None) is None
        assert mod.fields([], (), "date") == (b"", False)


def test_fields_twins_agree():
    rng = random.Random(7)
    (_, c), (_, p) = SCAN
    for _ in range(5000):
        h = random_headers(rng)
        for drop, flag in ((("content-length", "transfer-encoding"), "date"), ((), None)):
            assert c.fields(h, drop, flag) == p.fields(h, drop, flag), h


@pytest.mark.parametrize("name,mod", HTTP1)
def test_http1_encode_head_same_as_general_path(name, mod, monkeypatch):
    rng = random.Random(11)
    cases = [(rng.choice([200, 404, 500, 299]), random_headers(rng),
              rng.choice(["", "content-length: 3\r\n"]), rng.choice([True, False]))
             for _ in range(3000)]
    fast = [mod.encode_head(*c) for c in cases]
    monkeypatch.setattr(mod, "_fields", lambda *a: None)
    general = [mod.encode_head(*c) for c in cases]
    assert fast == general
    # and the fast path did take the clean ones
    assert sum(clean(c[1]) for c in cases) > 300


@pytest.mark.parametrize("name,mod", H1CLIENT)
def test_h1client_encode_head_same_as_general_path(name, mod, monkeypatch):
    rng = random.Random(13)
    cases = [(rng.choice(["GET", "POST"]), rng.choice(["/", "/a?b=c"]), random_headers(rng),
              rng.choice(["", "content-length: 3\r\n"])) for _ in range(3000)]

    def run():
        out = []
        for c in cases:
            try:
                out.append(mod.encode_head(*c))
            except (ValueError, TypeError) as e:     # UnicodeEncodeError is a ValueError
                out.append(type(e).__name__)
        return out
    fast = run()
    monkeypatch.setattr(mod, "_fields", lambda *a: None)
    assert run() == fast
    assert sum(type(x) is bytes for x in fast) > 300


RESP_NAMES = ["Server", "Date", "date", "Content-Type", "Connection", "Keep-Alive", "TE",
              "Trailer", "Upgrade", "Proxy-Authenticate", "X-A", "Set-Cookie", "Content-Length",
              "Transfer-Encoding", "Proxy-Connection"]
RESP_VALUES = ["nginx", "keep-alive", "close", "Close", "a b", "1", "x" * 70, "chunked", "5"]


def random_response(rng: random.Random) -> bytes:
    body = b"x" * rng.choice([0, 1, 5, 38])
    lines = [f"{rng.choice(RESP_NAMES)}:{rng.choice(['', ' ', '  ', chr(9)])}{rng.choice(RESP_VALUES)}"
             for _ in range(rng.randrange(0, 7))]
    if rng.random() < 0.8:
        lines.insert(rng.randrange(0, len(lines) + 1), f"Content-Length: {len(body)}")
    status = rng.choice(["200 OK", "404 Not Found", "204 No Content", "500 Oops", "201 "])
    return f"HTTP/1.1 {status}\r\n".encode() + "".join(x + "\r\n" for x in lines).encode() \
        + b"\r\n" + body


@pytest.mark.parametrize("name,mod", SCAN)
def test_scan_response_block_is_scan_response_written(name, mod):
    """The block form takes what scan_response takes, and its lines are fields(forward)."""
    rng = random.Random(17)
    taken = 0
    for _ in range(5000):
        data = random_response(rng)
        r = mod.scan_response(data)
        b = mod.scan_response_block(data)
        if r is None:
            assert b is None, data
            continue
        taken += 1
        status, _, forward, cl, keep, start = r
        lines, has_date = mod.fields(forward, (), "date")
        assert b == (status, lines, has_date, cl, keep, start), data
    assert taken > 500


def test_fields_head_and_tail_twins_agree():
    rng = random.Random(23)
    (_, c), (_, p) = SCAN
    for _ in range(3000):
        h = random_headers(rng)
        head = rng.choice([None, "", "GET / HTTP/1.1\r\n", "caf\xe9 ", "\u20ac"])
        tail = rng.choice([None, "", "host: x\r\n\r\n", "\u20ac"])
        got = c.fields(h, ("host",), None, head, tail)
        assert got == p.fields(h, ("host",), None, head, tail), (h, head, tail)
        plain = c.fields(h, ("host",), None)
        if got is not None:        # head and tail around the same lines
            assert got == ((head or "").encode("latin-1") + plain[0]
                           + (tail or "").encode("latin-1"), plain[1])
        elif plain is not None:    # declined only for a head or tail that is not latin-1
            assert "\u20ac" in (head or "") + (tail or "")


@pytest.mark.parametrize("name,mod", SCAN)
def test_answer_writes_framing_and_body(name, mod):
    for parts in [(), (b"HTTP/1.1 200 OK\r\n",), (b"HTTP/1.1 404 Not Found\r\n", b"a: b\r\n", b"")]:
        for body in (b"", b"x", b"y" * 70000):
            for close in (False, True):
                want = b"".join(parts) + b"content-length: %d\r\n" % len(body) \
                    + (b"connection: close\r\n" if close else b"") + b"\r\n" + body
                assert mod.answer(parts, body, close) == want
