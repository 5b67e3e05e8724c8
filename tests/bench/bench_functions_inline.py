"""Micro benchmark: one request through an ``aws_proxy`` route to an ``inline`` function.

The whole gateway request (``GatewayApp.__rsgi__`` with a fake RSGI scope and protocol:
request context, route match, stage chain, the payload 1.0/2.0 event, the invocation with
its LambdaContext, output capture and START/END/REPORT log block, the response parsed
from the handler's result) awaited one after another on a real event loop (uvloop when
installed, as ``gwproxy serve`` runs), so a thread hop's latency counts in full.
``extra_info`` gives microseconds per request (wall time, median; and CPU time, the least
of a few batches); the ``mock`` case is the same request to a
``mock`` integration, for reference (the function's own cost is the difference).

    python -m pytest tests/bench/bench_functions_inline.py -o addopts="" -p no:cacheprovider \
        --benchmark-columns=min,median,ops

Cases: a sync handler with ``inline_sync: thread`` (a thread-pool hop per call), with
``inline_sync: loop`` (called on the event loop), with the default ``auto`` (promoted to
the loop after its first fast calls; warmed up here), an ``async def`` handler; REST
(payload 1.0) and, for the async handler, an HTTP API (payload 2.0). The function log
blocks go to /dev/null (one ``os.write`` per invocation is still made).
"""
from __future__ import annotations

import asyncio
import os
import resource
import textwrap

import pytest

from tests.bench.bench_app import Headers, Proto
from tests.bench.conftest import new_loop

pytest.importorskip("pytest_benchmark")

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "functions", "fixtures")
_SCHEMA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                       "proxy", "schema.json")
HAS_INLINE_SYNC = "inline_sync" in open(_SCHEMA).read()


def _fn(name, handler, mode=None, concurrency=16):
    extra = f", inline_sync: {mode}" if (mode and HAS_INLINE_SYNC) else ""
    return (f"  {name}: {{handler: bench_handler.{handler}, code: \"{FIXTURES}\", runtime: inline, "
            f"concurrency: {concurrency}, queue_wait: 10s{extra}}}\n")


CONFIG = (
    "server: {workers: 1, access_log: false}\n"
    "throttle: {enabled: false}\n"
    "functions:\n"
    + _fn("f_thread", "handler", "thread")
    + _fn("f_loop", "handler", "loop")
    + _fn("f_auto", "handler")
    + _fn("f_async", "async_handler", concurrency=256)
    + textwrap.dedent("""\
    apis:
      bench:
        type: rest
        stages:
          b: {}
        routes:
          - route: GET /mock/{id}
            integration: {type: mock, status: 200, headers: {content-type: application/json},
                          body: '{"id": 1, "name": "rex"}'}
          - route: GET /thread/{id}
            integration: {type: aws_proxy, function: f_thread}
          - route: GET /loop/{id}
            integration: {type: aws_proxy, function: f_loop}
          - route: GET /auto/{id}
            integration: {type: aws_proxy, function: f_auto}
          - route: GET /async/{id}
            integration: {type: aws_proxy, function: f_async}
      hbench:
        type: http
        host: h.test
        routes:
          - route: GET /async/{id}
            integration: {type: aws_proxy, function: f_async}
    """))

# case -> (host, path, needs inline_sync)
CASES = {
    "mock (reference)": ("127.0.0.1:8080", "/b/mock/1", False),
    "sync, inline_sync: thread": ("127.0.0.1:8080", "/b/thread/1", False),
    "sync, inline_sync: loop": ("127.0.0.1:8080", "/b/loop/1", True),
    "sync, inline_sync: auto (promoted)": ("127.0.0.1:8080", "/b/auto/1", True),
    "async": ("127.0.0.1:8080", "/b/async/1", False),
    "async, HTTP API (payload 2.0)": ("h.test", "/async/1", False),
}




class Scope:
    proto = "http"
    method = "GET"
    query_string = ""
    client = "127.0.0.1:50000"
    scheme = "http"
    http_version = "1.1"

    def __init__(self, host, path):
        self.path = path
        self.authority = host
        self.headers = Headers([("host", host), ("user-agent", "wrk"), ("accept", "*/*")])


@pytest.fixture(scope="module")
def app_loop(tmp_path_factory):
    from proxy.app import GatewayApp
    from proxy.gateway import load_gateway

    loop = new_loop()
    p = tmp_path_factory.mktemp("fnbench") / "gw.yaml"
    p.write_text(CONFIG)
    app = GatewayApp(load_gateway(str(p)))
    loop.run_until_complete(app.gw.start())
    devnull = os.open(os.devnull, os.O_WRONLY)
    for rt in app.gw.services.functions.runtimes.values():
        rt.log.fd = devnull
    yield app, loop
    loop.run_until_complete(app.gw.close())
    loop.close()
    os.close(devnull)


@pytest.mark.parametrize("case", list(CASES))
def test_invocation(benchmark, app_loop, case):
    host, path, needs = CASES[case]
    if needs and not HAS_INLINE_SYNC:
        pytest.skip("no inline_sync setting in this version")
    app, loop = app_loop
    scope, proto = Scope(host, path), Proto()
    n = 200

    async def many(k):
        rsgi = app.__rsgi__
        for _ in range(k):
            await rsgi(scope, proto)

    loop.run_until_complete(many(300))     # cold start, and auto's promotion
    assert proto.status == 200, (proto.status, proto.body)
    assert proto.body == b'{"id": 1, "name": "rex"}'

    def batch():
        loop.run_until_complete(many(n))
    benchmark.group = "inline function request"
    benchmark(batch)
    assert proto.status == 200
    us = benchmark.stats.stats.median / n * 1e6
    cpu = _cpu_us(batch, n)
    benchmark.extra_info["us_per_request"] = round(us, 2)
    benchmark.extra_info["cpu_us_per_request"] = round(cpu, 2)
    print(f"\n{case}: {us:.2f} us/request (wall, median), {cpu:.2f} us CPU/request (min of 7)")


def _cpu_us(batch, n: int, rounds: int = 7) -> float:
    """CPU time (user + system) per request, the least of ``rounds`` batches: less moved
    by other processes on the machine than wall time."""
    best = float("inf")
    for _ in range(rounds):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        batch()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        best = min(best, (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n * 1e6)
    return best
