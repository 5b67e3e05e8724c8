"""Differential fuzz of the front end: with and without the scanned fast path, the same reads
give the same result.

``gwcore.http1.Connection.data_received`` offers a read made between messages (nothing
pending) to the strict scanner ``_scan_request`` (gwcore.h1scan) and hands whatever it
refuses to llhttp (httptools). tests/frontend/test_scan_path.py checks fixed cases; here a
seeded, bounded mutation fuzz builds sequences of 1-3 reads on one fresh connection from a
corpus of valid requests (wrk / curl / browser GETs, HEAD, DELETE with Content-Length: 0,
POSTs with a body, chunked POSTs, Connection: close, duplicate Host, heads near a small
``max_header_bytes``), mutated as in tests/gwcore/test_h1scan.py (byte replace / insert /
delete, header line duplicate / drop / case swap, special header lines, truncation, a second
message appended) and cut into reads at message boundaries, inside heads and bodies.

Each case runs twice, on fresh connections with a fake transport and a recording app that
answers every request at once: once with the scanner on, once with it off (the module's
``_scan_request`` answers None). What the app saw, the exact events on the transport
(writes, close vs abort, pause / resume / eof) and the connection's state at the end must be
identical. Both ``http1`` twins run with both ``h1scan`` twins behind them (as in
test_scan_path); that the fuzz reaches both paths is asserted from the counts of reads the
scanner took and of reads llhttp was fed.
"""
from __future__ import annotations

import asyncio
import random

import pytest

import gwcore
from tests import h1wire
from tests.h1wire import Transport, request_view

HTTP1 = gwcore.twins("http1")
H1SCAN = gwcore.twins("h1scan")

DATE = b"date: Thu, 01 Jan 2026 00:00:00 GMT\r\n"   # the front end's Date header, frozen
BIG = 16384                                          # the default max_header_bytes
SMALL = 512                                          # a small one: the 431 path is reached

#: cases per (http1 twin): the pure one is slower
CASES = {"cython": 25000, "python": 15000}
SEED = 0x5CA7F022


# -- recording stand-ins (as in test_scan_path) ------------------------------------------------

class Scanner:
    """Stands in for the module's ``_scan_request``: the real scanner when on (counting what it
    took), None when off."""

    def __init__(self, fn):
        self.fn = fn
        self.on = True
        self.taken = 0

    def __call__(self, data, limit):
        if not self.on:
            return None
        r = self.fn(data, limit)
        if r is not None:
            self.taken += 1
        return r


class FedParser:
    """An httptools parser that counts the reads it is fed."""

    def __init__(self, inner, counter: list):
        self._inner = inner
        self._counter = counter

    def feed_data(self, data):
        self._counter[0] += 1
        return self._inner.feed_data(data)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class App:
    """Records each request and answers it at once (without reading any body)."""

    def __init__(self):
        self.seen: list = []

    def serve_now(self, ex, peer):
        self.seen.append(request_view(ex, peer))
        ex.response_bytes(200, [("content-type", "text/plain"),
                                ("x-seen", f"{ex.method} {ex.path}?{ex.query}")], b"ok")
        return None


def run_case(mod, scanner: Scanner, loop, reads: list, limit: int, scan: bool) -> dict:
    """``reads`` delivered to one fresh connection (while its transport is open, as asyncio
    would), then EOF and connection_lost; everything observable, in order."""
    scanner.on = scan
    app = App()
    server = mod.FrontendServer(app, loop, max_header_bytes=limit)
    conn = mod.Connection(server)
    t = Transport()
    conn.connection_made(t)
    fed = [0]
    conn.parser = FedParser(conn.parser, fed)
    taken = scanner.taken
    raised = None
    delivered = 0
    try:
        for r in reads:
            if t.closed:
                break
            conn.data_received(r)
            delivered += 1
    except Exception as e:  # noqa: BLE001 - must be the same either way
        raised = repr(e)
    state = {
        "current": conn.current is None, "parsing": conn.parsing is None,
        "queue": len(conn.queue), "lingering": conn.lingering,
        "pending_reject": conn.pending_reject, "closed_flag": conn.closed,
    }
    events_before_eof = list(t.events)
    eof = None
    if raised is None and not t.closed:
        try:
            eof = bool(conn.eof_received())
            if not eof:
                t.close()          # asyncio closes the transport itself then
        except Exception as e:  # noqa: BLE001
            eof = repr(e)
    try:
        conn.connection_lost(None)
        lost = None
    except Exception as e:  # noqa: BLE001
        lost = repr(e)
    scanner.on = True
    return {
        "outcome": {
            "seen": app.seen, "events": events_before_eof, "after_eof": t.events[len(events_before_eof):],
            "closed": t.closed, "delivered": delivered, "raised": raised, "state": state,
            "eof": eof, "lost": lost,
        },
        "scanned": scanner.taken - taken, "fed": fed[0],
    }


# -- the corpus ---------------------------------------------------------------------------------

def near_limit(size: int, ows: bool) -> bytes:
    """A GET of exactly ``size`` bytes with many short headers, ``name:value`` (llhttp's
    path counts such a line one byte more than it takes on the wire) or ``name: value``."""
    sep = b": " if ows else b":"
    lines = [b"GET /big?x=1 HTTP/1.1\r\n", b"Host" + sep + b"h\r\n"] + \
        [b"x-%02d%bv\r\n" % (i, sep) for i in range(24)]
    pad = size - sum(map(len, lines)) - 2 - len(b"x-pad" + sep + b"\r\n")
    assert pad > 0
    lines.append(b"x-pad" + sep + b"p" * pad + b"\r\n")
    raw = b"".join(lines) + b"\r\n"
    assert len(raw) == size
    return raw


CHROME = (b"GET /index.html?lang=en HTTP/1.1\r\n"
          b"Host: www.example.com\r\n"
          b"Connection: keep-alive\r\n"
          b"sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\"\r\n"
          b"sec-ch-ua-mobile: ?0\r\n"
          b"Upgrade-Insecure-Requests: 1\r\n"
          b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          b"Chrome/124.0.0.0 Safari/537.36\r\n"
          b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
          b"Sec-Fetch-Site: none\r\n"
          b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
          b"Accept-Language: en-GB,en;q=0.9\r\n"
          b"Cookie: sid=abc123; theme=dark\r\n"
          b"If-None-Match: W/\"5e15153d-120f\"\r\n"
          b"\r\n")

SEEDS = [
    b"GET /b/pets/1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: localhost:8080\r\n\r\n",
    b"GET /b/pets?limit=10&offset=0 HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: curl/8.5.0\r\n"
    b"Accept: */*\r\n\r\n",
    CHROME,
    b"GET /a%20b/%E2%82%AC?q=%3F HTTP/1.1\r\nHost: h\r\n\r\n",
    b"HEAD /health HTTP/1.1\r\nHost: a\r\nAccept: */*\r\n\r\n",
    b"DELETE /b/pets/1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS /cors HTTP/1.1\r\nHost: h\r\nOrigin: https://a.example\r\n"
    b"Access-Control-Request-Method: PUT\r\n\r\n",
    b"PUT /b/pets/1 HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n\r\n",
    b"POST /ping HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
    b'{"a":[1,2]}',
    b"POST /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n"
    b"X-Trailer: t\r\n\r\n",
    b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: first.example\r\nX-A: 1\r\nHost: second.example\r\n\r\n",
    b"GET /x HTTP/1.1\r\nUser-Agent: t\r\n\r\n",
    b"GET /A/b HTTP/1.1\r\nhOsT: Mixed.Example\r\nX-Request-ID: AbC\r\nConnection: Keep-Alive\r\n"
    b"content-LENGTH: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:h\r\nX-Tab:\t\tv  w\r\nX-Sp:   s\r\n\r\n",
    b"GET /old HTTP/1.0\r\nHost: h\r\n\r\n",
    b"GET /p?q=1#frag HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5, max=100\r\n\r\n",
]

#: heads around SMALL (512): the scanner's limit against llhttp's path's 431
NEAR = [near_limit(n, ows) for n in range(SMALL - 30, SMALL + 30, 3) for ows in (False, True)]

#: the shared special header lines, and one that pushes a head past SMALL
HEADER_LINES = h1wire.HEADER_LINES + [b"X-Pad: " + b"p" * 300]


def _message(rng: random.Random, pool: list) -> bytes:
    data = rng.choice(pool)
    if rng.random() < 0.35:
        return data                         # left whole: mostly taken by the scanner
    for _ in range(rng.randrange(1, 4)):
        data = h1wire.mutate(rng, data, SEEDS, HEADER_LINES)
    return data


def _cut(rng: random.Random, stream: bytes) -> int:
    """A cut point inside ``stream``: at / around the first head's end, or anywhere."""
    end = stream.find(b"\r\n\r\n")
    if end >= 0 and rng.random() < 0.4:
        return min(max(1, end + 4 + rng.choice((0, 0, 0, -1, -2, 1))), len(stream) - 1)
    return rng.randrange(1, len(stream))


def make_case(rng: random.Random) -> tuple[list, int]:
    """(reads, max_header_bytes) of one case."""
    near = rng.random() < 0.25
    pool = NEAR if near else SEEDS
    k = rng.choices((1, 2, 3), (50, 35, 15))[0]
    msgs = [_message(rng, pool if i == 0 else SEEDS) for i in range(k)]
    mode = rng.random()
    if mode < 0.5:                          # one message a read
        reads = msgs
    elif mode < 0.8:                        # one stream, cut in one to three reads
        stream = b"".join(msgs)
        cuts = sorted({_cut(rng, stream) for _ in range(rng.randrange(1, 3))}) if len(stream) > 1 else []
        bounds = [0, *cuts, len(stream)]
        reads = [stream[a:b] for a, b in zip(bounds, bounds[1:])]
    else:                                   # two messages in one read, the rest alone
        reads = [msgs[0] + (msgs[1] if k > 1 else _message(rng, SEEDS)), *msgs[2:]]
    reads = [r for r in reads if r][:3]     # asyncio never delivers an empty read
    r = rng.random()
    if near or r < 0.15:
        limit = SMALL
    elif r < 0.3 and reads:                 # just around the first read's length
        limit = max(18, len(reads[0]) + rng.randrange(-6, 7))
    else:
        limit = BIG
    return reads, limit


# -- the fuzz -----------------------------------------------------------------------------------

FRONT_IDS = [f"http1-{h}/scan-{s}" for h, _ in HTTP1 for s, _ in H1SCAN]


@pytest.fixture(params=[(h, s) for h in HTTP1 for s in H1SCAN], ids=FRONT_IDS)
def front(request, monkeypatch):
    (hname, mod), (_, scan) = request.param
    scanner = Scanner(scan.scan_request)
    monkeypatch.setattr(mod, "_scan_request", scanner)
    monkeypatch.setattr(mod.CLOCK, "date", DATE)
    loop = asyncio.new_event_loop()
    try:
        yield hname, mod, scanner, loop
    finally:
        loop.close()


def _diff(a: dict, b: dict) -> str:
    out = []
    for key in a:
        if a[key] != b[key]:
            out.append(f"    {key}: scanner on  {a[key]!r}\n    {' ' * len(key)}  scanner off {b[key]!r}")
    return "\n".join(out)


def test_scanner_on_and_off_are_indistinguishable(front):
    hname, mod, scanner, loop = front
    rng = random.Random(SEED)
    cases = scanned_cases = llhttp_cases = answered = 0
    statuses: dict = {}
    failures = []
    for _ in range(CASES[hname]):
        reads, limit = make_case(rng)
        if not reads:
            continue
        cases += 1
        on = run_case(mod, scanner, loop, reads, limit, True)
        off = run_case(mod, scanner, loop, reads, limit, False)
        assert off["scanned"] == 0
        if on["scanned"]:
            scanned_cases += 1
        if on["fed"]:
            llhttp_cases += 1
        if on["outcome"]["seen"]:
            answered += 1
        for e in on["outcome"]["events"]:
            if e[0] == "write" and e[1][:9] == b"HTTP/1.1 ":
                st = e[1][9:12]
                statuses[st] = statuses.get(st, 0) + 1
        if on["outcome"] != off["outcome"]:
            failures.append(f"  reads={reads!r} max_header_bytes={limit}\n"
                            + _diff(on["outcome"], off["outcome"]))
    assert not failures, (f"{len(failures)} of {cases} cases differ with the scanner on and off, "
                          f"e.g.:\n" + "\n".join(failures[:5]))
    # the fuzz reaches both paths, and the answers that matter
    assert scanned_cases > cases // 10, (scanned_cases, cases)
    assert llhttp_cases > cases // 4, (llhttp_cases, cases)
    assert answered > cases // 3, (answered, cases)
    for st in (b"200", b"400", b"431"):
        assert statuses.get(st, 0) > 10, statuses
    print(f"{hname}: {cases} cases, scanned {scanned_cases} ({scanned_cases / cases:.0%}), "
          f"llhttp {llhttp_cases} ({llhttp_cases / cases:.0%}), statuses {statuses}")
