"""Micro benchmark: writing HTTP/1.1 heads, compiled and pure twins (ns/op).

Opt-in, not part of the test suite (pytest ignores tests/bench). Run on purpose::

    python setup.py build_ext --inplace      # compiles gwcore/http1.py and gwcore/h1client.py
    python tests/bench/bench_heads.py        # plain ns/op table, no pytest
    python tests/bench/bench_heads.py 2000   # the same, 2,000 calls per timing (a quick look)
    python -m pytest tests/bench/bench_heads.py -o addopts="" -p no:cacheprovider \
        --benchmark-group-by=group --benchmark-columns=min,median,mean,ops

gwcore.http1 and gwcore.h1client are written in Cython's pure-Python mode: the "cython"
twin is the compiled module, the "python" twin the same source run uncompiled
(gwcore/_http1_py.py, gwcore/_h1client_py.py). Both write header lines with
``gwcore.h1scan.fields``, the one ``gwcore.load("h1scan")`` picks (compiled unless
``GWCORE_PURE=1``), so the "python" rows here are the uncompiled module around that.

Cases, each what the gateway does per request:

- ``resp-app``: ``http1.encode_head(200, headers, "content-length: 24\\r\\n", True)``, the
  front end's response head for an answer made by the gateway (a mock, a function): one
  content-type header, the gateway's own Date added;
- ``resp-relay``: the same for a response relayed from the load tests' nginx backend (its
  forwarded headers: Server, Date, Content-Type; its Date kept);
- ``up-wrk``: the upstream request head for what wrk sends: ``h1client.outgoing_headers``
  (hop-by-hop headers stripped, Host and X-Forwarded-* set), ``body_framing`` and
  ``h1client.encode_head``, as an http_proxy route and UpstreamPool.start do;
- ``up-browser``: the same for a browser-like request (11 headers, Connection among them);
- ``outgoing-browser`` and ``encode-browser``: its two parts apart.

Before timing, each case is checked once: both twins write the expected bytes (the
gateway's Date, set once a second by each twin's own clock, is compared as a placeholder).
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gwcore  # noqa: E402
from _timing import bench_ns, best_ns  # noqa: E402

BODY_FRAMING = "content-length: 24\r\n"     # loadtests/harness.py BACKEND_BODY is 24 bytes
APP_HEADERS = [("content-type", "application/json")]
RELAY_HEADERS = [("Server", "nginx/1.22.1"), ("Date", "Mon, 13 May 2024 10:00:00 GMT"),
                 ("Content-Type", "application/json")]

#: request headers as the front end hands them on (gwcore.h1scan.scan_request: lower-case)
WRK = [("host", "127.0.0.1:8080"), ("user-agent", "wrk"), ("accept", "*/*")]
BROWSER = [
    ("host", "api.example.com"),
    ("connection", "keep-alive"),
    ("sec-ch-ua", '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'),
    ("sec-ch-ua-mobile", "?0"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/124.0.0.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    ("sec-fetch-site", "none"), ("sec-fetch-mode", "navigate"),
    ("accept-encoding", "gzip, deflate, br"), ("accept-language", "en-US,en;q=0.9"),
    ("cookie", "session=3f1c9a7e52b04d6c; theme=dark"),
]
#: (upstream Host, client address, scheme, front end port) for each request
WRK_FWD = ("127.0.0.1:9000", "127.0.0.1", "http", "8080")
BROWSER_FWD = ("10.0.0.7:9000", "203.0.113.9", "https", "443")
BROWSER_TARGET = "/pets/1?view=full&lang=en"


def _lines(pairs) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in pairs).encode("latin-1")


def _fwd(host, peer, scheme, port):
    return [("host", host), ("x-forwarded-for", peer), ("x-forwarded-proto", scheme),
            ("x-forwarded-port", port)]


BROWSER_OUT = [kv for kv in BROWSER if kv[0] not in ("host", "connection")] + _fwd(*BROWSER_FWD)
_CLOCK = b"<the gateway's date line>"

#: case -> the expected value (heads as bytes; outgoing-browser: the header list)
EXPECTED = {
    "resp-app": b"HTTP/1.1 200 OK\r\n" + _CLOCK + _lines(APP_HEADERS) + BODY_FRAMING.encode() + b"\r\n",
    "resp-relay": b"HTTP/1.1 200 OK\r\n" + _lines(RELAY_HEADERS) + BODY_FRAMING.encode() + b"\r\n",
    "up-wrk": b"GET /pets/1 HTTP/1.1\r\n" + _lines(WRK[1:] + _fwd(*WRK_FWD)) + b"\r\n",
    "up-browser": b"GET " + BROWSER_TARGET.encode() + b" HTTP/1.1\r\n" + _lines(BROWSER_OUT) + b"\r\n",
    "outgoing-browser": BROWSER_OUT,
    "encode-browser": b"GET " + BROWSER_TARGET.encode() + b" HTTP/1.1\r\n" + _lines(BROWSER_OUT) + b"\r\n",
}
CASES = tuple(EXPECTED)


def _module(case):
    return "http1" if case.startswith("resp") else "h1client"


def _op(mod, case):
    if case == "resp-app":
        enc = mod.encode_head
        return lambda: enc(200, APP_HEADERS, BODY_FRAMING, True)
    if case == "resp-relay":
        enc = mod.encode_head
        return lambda: enc(200, RELAY_HEADERS, BODY_FRAMING, True)
    outgoing, framing, enc = mod.outgoing_headers, mod.body_framing, mod.encode_head
    if case == "up-wrk":
        h, p, s, port = WRK_FWD
        return lambda: enc("GET", "/pets/1", outgoing(WRK, h, p, s, port), framing("GET"))
    h, p, s, port = BROWSER_FWD
    if case == "up-browser":
        return lambda: enc("GET", BROWSER_TARGET, outgoing(BROWSER, h, p, s, port), framing("GET"))
    if case == "outgoing-browser":
        return lambda: outgoing(BROWSER, h, p, s, port)
    out = outgoing(BROWSER, h, p, s, port)
    return lambda: enc("GET", BROWSER_TARGET, out, framing("GET"))


def check(case) -> None:
    """Both twins give the expected value (the gateway's Date line as a placeholder)."""
    for name, mod in gwcore.twins(_module(case)):
        r = _op(mod, case)()
        if case.startswith("resp"):
            date = mod.CLOCK.date
            assert date.startswith(b"date: ") and date.endswith(b" GMT\r\n"), date
            r = r.replace(date, _CLOCK)
        assert r == EXPECTED[case], f"{name} {_module(case)} {case}: {r!r}"


def main(n: int | None = None) -> None:
    print(f"{'twin':8} {'case':16} {'ns/op':>8}")
    for case in CASES:
        check(case)
    for name in ("cython", "python"):
        for case in CASES:
            mod = dict(gwcore.twins(_module(case))).get(name)
            if mod is None:
                continue
            op = _op(mod, case)
            k = n or (200_000 if name == "cython" else 50_000)
            print(f"{name:8} {case:16} {best_ns(op, k):8.0f}")


try:
    import pytest
except ImportError:  # plain script use
    pytest = None

if pytest is not None and __name__ != "__main__":
    pytest.importorskip("pytest_benchmark")

    _TWINS = [n for n in ("cython", "python")
              if any(t == n for m in ("http1", "h1client") for t, _ in gwcore.twins(m))]

    @pytest.mark.parametrize("case", list(CASES))
    @pytest.mark.parametrize("twin", _TWINS)
    def test_heads(benchmark, twin, case):
        mod = dict(gwcore.twins(_module(case))).get(twin)
        if mod is None:
            pytest.skip(f"gwcore.{_module(case)} has no {twin} twin here")
        benchmark.group = f"heads {case}"
        check(case)
        bench_ns(benchmark, _op(mod, case))

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
