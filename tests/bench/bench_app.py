"""Micro benchmark: the gateway's own per-request Python work, without sockets.

One request through ``GatewayApp.__rsgi__`` (request id, Request context, host/stage
resolve, route match, the route's stage chain, a ``mock`` integration, respond) with a
fake RSGI scope and protocol, driven without an event loop. This is the part of a
request's cost that proxy/ controls; the rest is granian (accept, parse, the Rust <->
Python crossing, write) and, for http_proxy, the upstream round trip. ``extra_info``
gives microseconds per request; compare with 1e6 / (nginx req/s) for the budget.

    python -m pytest tests/bench/bench_app.py -o addopts="" -p no:cacheprovider \
        --benchmark-columns=min,median,ops

Cases: the default pipeline (account throttle on), with the account throttle off (the
stage chain's cost), and the Request constructor alone. (A cache hit needs a running
loop: it is measured end to end by compare.py's cache_hit scenario.)
"""
from __future__ import annotations

import time

import pytest

from tests.bench.conftest import drive

CONFIG = """
server: {{workers: 1, access_log: false}}
{account}
apis:
  bench:
    type: rest
    stages:
      b: {{{stage}}}
    routes:
      - route: GET /pets/{{id}}
        integration: {{type: mock, status: 200, headers: {{content-type: application/json}},
                      body: '{{"id": 1, "name": "rex"}}'}}
"""

CASES = {
    "default (account throttle on)": ("throttle: {rate: 1000000000, burst: 1000000000}", ""),
    "account throttle off": ("throttle: {enabled: false}", ""),
}

HEADERS = [("host", "127.0.0.1:8080"), ("user-agent", "wrk"), ("accept", "*/*")]


class Headers:
    """granian's RSGI headers: ``items()`` and ``get()``."""

    def __init__(self, pairs):
        self.pairs = pairs
        self.d = dict(pairs)

    def items(self):
        return list(self.pairs)

    def get(self, k, default=None):
        return self.d.get(k, default)


class Scope:
    proto = "http"
    method = "GET"
    path = "/b/pets/1"
    query_string = ""
    headers = Headers(HEADERS)
    client = "127.0.0.1:50000"
    scheme = "http"
    authority = "127.0.0.1:8080"
    http_version = "1.1"


class Proto:
    __slots__ = ("status", "body", "n")

    def __init__(self):
        self.status = 0
        self.body = b""
        self.n = 0

    def response_bytes(self, status, headers, body):
        self.status = status
        self.body = body
        self.n += 1

    def response_empty(self, status, headers):
        self.status = status
        self.n += 1

    def __aiter__(self):
        return self

    async def __anext__(self):
        raise StopAsyncIteration


@pytest.mark.parametrize("case", list(CASES))
def test_request(benchmark, gateway_app, case):
    account, stage = CASES[case]
    app = gateway_app(CONFIG.format(account=account, stage=stage))
    scope, proto = Scope(), Proto()
    drive(app.__rsgi__(scope, proto))
    assert proto.status == 200, proto.status
    n = 200

    def batch():
        rsgi = app.__rsgi__
        for _ in range(n):
            drive(rsgi(scope, proto))
    benchmark.group = "gateway request (mock integration)"
    benchmark(batch)
    assert proto.status == 200
    us = benchmark.stats.stats.median / n * 1e6
    benchmark.extra_info["us_per_request"] = round(us, 2)
    print(f"\n{case}: {us:.2f} us/request")


def test_request_context(benchmark):
    from proxy.context import Request
    proto = Proto()
    n = 1000

    def batch():
        for _ in range(n):
            Request(proto, "GET", "/b/pets/1", "", HEADERS, "127.0.0.1", "127.0.0.1", "http",
                    "127.0.0.1:8080", "1.1", "rid", 0, 0.0, 1 << 20)
    benchmark.group = "per-request objects"
    benchmark(batch)
    benchmark.extra_info["ns_per_request"] = round(benchmark.stats.stats.median / n * 1e9)
