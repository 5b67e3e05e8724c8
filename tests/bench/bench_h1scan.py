"""Micro benchmark: gwcore strict HTTP/1.1 head scanners, compiled and pure twins (ns/op).

Opt-in, not part of the test suite (pytest ignores tests/bench). Run on purpose::

    python setup.py build_ext --inplace      # or: cythonize -i gwcore/h1scan.pyx
    python tests/bench/bench_h1scan.py       # plain ns/op table, no pytest
    python tests/bench/bench_h1scan.py 2000  # the same, 2,000 calls per timing (a quick look)
    python -m pytest tests/bench/bench_h1scan.py -o addopts="" -p no:cacheprovider \
        --benchmark-group-by=group --benchmark-columns=min,median,mean,ops

Each case is one call the gateway makes per request, on input the scanner takes (a
benchmark of the fallback path would measure a ``None``):

- ``req-wrk``: ``scan_request(data, 16384)`` (the front end's default header limit) on
  what wrk sends: a GET with Host, User-Agent and Accept;
- ``req-browser``: the same on a browser-like GET with a query and 11 headers (Connection,
  sec-ch-ua, a long User-Agent and Accept, Cookie, ...);
- ``resp``: ``scan_response(data)`` on what the load tests' nginx backend answers (200,
  Server, Date, Content-Type, Content-Length, Connection, a small JSON body, one read);
- ``resp-block``: ``scan_response_block(data)`` on the same bytes (the forwarded headers
  written out as one bytes, what the upstream client uses on the relay path);
- ``fields-resp``: ``fields(headers, framing names, "date")`` on that response's forwarded
  headers, as gwcore.http1.encode_head writes a front end response head;
- ``fields-req``: ``fields(headers, ("content-length", "transfer-encoding"), None)`` on
  the headers sent upstream for the browser request, as gwcore.h1client.encode_head writes
  an upstream request head.

Before timing, each case is checked once: the scanner takes the input and both twins
return the same value.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gwcore  # noqa: E402
from _timing import bench_ns, best_ns  # noqa: E402

LIMIT = 16384   # gwcore.http1.FrontendServer's default max_header_bytes

WRK = b"GET /b/pets/1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"

BROWSER = (
    b"GET /b/pets/1?view=full&lang=en HTTP/1.1\r\n"
    b"Host: api.example.com\r\n"
    b"Connection: keep-alive\r\n"
    b'sec-ch-ua: "Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"\r\n'
    b"sec-ch-ua-mobile: ?0\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/124.0.0.0 Safari/537.36\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,"
    b"*/*;q=0.8\r\n"
    b"Sec-Fetch-Site: none\r\n"
    b"Sec-Fetch-Mode: navigate\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Accept-Language: en-US,en;q=0.9\r\n"
    b"Cookie: session=3f1c9a7e52b04d6c; theme=dark\r\n"
    b"\r\n"
)

_BODY = b'{"id": 1, "name": "rex"}'     # loadtests/harness.py BACKEND_BODY
NGINX = (
    b"HTTP/1.1 200 OK\r\n"
    b"Server: nginx/1.22.1\r\n"
    b"Date: Mon, 13 May 2024 10:00:00 GMT\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: %d\r\n"
    b"Connection: keep-alive\r\n"
    b"\r\n" % len(_BODY)
) + _BODY

#: what encode_head hands fields() for that response relayed (UpstreamResponse.forward_headers)
RESP_HEADERS = [("Server", "nginx/1.22.1"), ("Date", "Mon, 13 May 2024 10:00:00 GMT"),
                ("Content-Type", "application/json")]
RESP_DROP = ("connection", "content-length", "keep-alive", "transfer-encoding")  # http1._FRAMING_NAMES

#: the browser request's headers as h1client.outgoing_headers sends them upstream
REQ_HEADERS = [
    ("sec-ch-ua", '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'),
    ("sec-ch-ua-mobile", "?0"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/124.0.0.0 Safari/537.36"),
    ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    ("sec-fetch-site", "none"), ("sec-fetch-mode", "navigate"),
    ("accept-encoding", "gzip, deflate, br"), ("accept-language", "en-US,en;q=0.9"),
    ("cookie", "session=3f1c9a7e52b04d6c; theme=dark"),
    ("host", "10.0.0.7:9000"), ("x-forwarded-for", "203.0.113.9"),
    ("x-forwarded-proto", "https"), ("x-forwarded-port", "443"),
]
REQ_DROP = ("content-length", "transfer-encoding")   # gwcore.h1client._FRAMING

CASES = ("req-wrk", "req-browser", "resp", "resp-block", "fields-resp", "fields-req")


def _op(mod, case):
    if case == "req-wrk":
        f = mod.scan_request
        return lambda: f(WRK, LIMIT)
    if case == "req-browser":
        f = mod.scan_request
        return lambda: f(BROWSER, LIMIT)
    if case == "resp":
        f = mod.scan_response
        return lambda: f(NGINX)
    if case == "resp-block":
        f = mod.scan_response_block
        return lambda: f(NGINX)
    f = mod.fields
    if case == "fields-resp":
        return lambda: f(RESP_HEADERS, RESP_DROP, "date")
    return lambda: f(REQ_HEADERS, REQ_DROP, None)


def check(case) -> None:
    """The case is taken (not the None fallback) and both twins give the same value."""
    got = [(name, _op(mod, case)()) for name, mod in gwcore.twins("h1scan")]
    for name, r in got:
        assert r is not None, f"{name} h1scan does not take the {case} input"
        assert r == got[0][1], f"h1scan twins disagree on {case}: {got}"


def main(n: int | None = None) -> None:
    print(f"{'twin':8} {'case':12} {'ns/op':>8}")
    for case in CASES:
        check(case)
    for name, mod in gwcore.twins("h1scan"):
        for case in CASES:
            op = _op(mod, case)
            k = n or (200_000 if name == "cython" else 20_000)
            print(f"{name:8} {case:12} {best_ns(op, k):8.0f}")


try:
    import pytest
except ImportError:  # plain script use
    pytest = None

if pytest is not None and __name__ != "__main__":
    pytest.importorskip("pytest_benchmark")

    @pytest.mark.parametrize("case", list(CASES))
    @pytest.mark.parametrize("twin", [n for n, _ in gwcore.twins("h1scan")])
    def test_h1scan(benchmark, twin, case):
        mod = dict(gwcore.twins("h1scan"))[twin]
        benchmark.group = f"h1scan {case}"
        check(case)
        bench_ns(benchmark, _op(mod, case))

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
