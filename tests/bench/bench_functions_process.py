"""Micro benchmark: warm invocations through ``ProcessRuntime.invoke`` (the ``process``
runtime: the gateway side and the worker process's round trip together).

The invocations run on a real event loop (uvloop when installed, as ``gwproxy serve``
runs), with this process (and so its workers) pinned to one CPU (GWPROXY_BENCH_NO_PIN=1:
not pinned): a round trip then costs both processes' own work plus two context switches,
what a saturated gateway pays, instead of wake-ups of idle CPUs that vary 2x from run to
run. The workers are started (cold start) before measuring. ``extra_info`` gives
microseconds per invocation (wall time) and the CPU microseconds spent per invocation in
this (the gateway's) process and in the workers.

    python -m pytest tests/bench/bench_functions_process.py -o addopts="" -p no:cacheprovider \
        --benchmark-columns=min,median,ops -s

``test_invocation``: one invocation at a time, one worker. Cases: a tiny event; a payload
1.0 event as an ``aws_proxy`` REST route sends it (~1.2 KB of JSON, given as a dict as the
integration does); the same with a handler that prints a line (the output capture path).
``test_saturated``: 64 callers on a function of concurrency 8 (the reserved-concurrency
queue, eight workers taking turns), as loadtests/bench_functions.py's ``function_process``
scenario under wrk.

The workers run SCHED_BATCH by default (proxy/functions/process.py): pinned to one CPU, a
single caller's round trip is then ~1.5 us slower (the gateway is not preempted by the
worker it woke, so it goes through its loop once more before it blocks); under load, on
several CPUs, it is what lets the gateway hand out more work per loop iteration.
GWPROXY_PROCESS_SCHED_BATCH=0 measures without it. The function log blocks go to
/dev/null (one ``os.write`` per invocation is still made).
"""
from __future__ import annotations

import asyncio
import os

import pytest

from tests.bench.conftest import new_loop

pytest.importorskip("pytest_benchmark")

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "functions", "fixtures")

EVENT_V1 = {
    "version": "1.0", "resource": "/pets/{id}", "path": "/b/pets/1", "httpMethod": "GET",
    "headers": {"host": "127.0.0.1:8080", "user-agent": "wrk", "accept": "*/*"},
    "multiValueHeaders": {"host": ["127.0.0.1:8080"], "user-agent": ["wrk"], "accept": ["*/*"]},
    "queryStringParameters": None, "multiValueQueryStringParameters": None,
    "requestContext": {
        "accountId": "123456789012", "apiId": "bench", "domainName": "127.0.0.1",
        "domainPrefix": "127", "extendedRequestId": "c0ffee", "httpMethod": "GET",
        "identity": {"accessKey": None, "accountId": None, "caller": None, "cognitoAmr": None,
                     "cognitoAuthenticationProvider": None, "cognitoAuthenticationType": None,
                     "cognitoIdentityId": None, "cognitoIdentityPoolId": None,
                     "principalOrgId": None, "sourceIp": "127.0.0.1", "user": None,
                     "userAgent": "wrk", "userArn": None},
        "path": "/b/pets/1", "protocol": "HTTP/1.1", "requestId": "c0ffee-1",
        "requestTime": "22/Nov/2026:05:54:42 +0000", "requestTimeEpoch": 1795240482000,
        "resourceId": "abc123", "resourcePath": "/pets/{id}", "stage": "b"},
    "pathParameters": {"id": "1"}, "stageVariables": None, "body": None, "isBase64Encoded": False,
}

# case -> (handler, event)
CASES = {
    "tiny event, no output": ("bench_handler.handler", {"k": 1}),
    "payload 1.0 event, no output": ("bench_handler.handler", EVENT_V1),
    "payload 1.0 event, prints a line": ("bench_handler.chatty", EVENT_V1),
}




@pytest.fixture(scope="module")
def loop():
    """The event loop, with this process (and so the workers it starts) pinned to one CPU
    unless GWPROXY_BENCH_NO_PIN is set: a round trip between two processes on two idle
    CPUs costs wake-ups from idle and cross-CPU wake-ups that vary from run to run (2x);
    on one CPU it is the two processes' own work plus two context switches, what a
    saturated gateway pays."""
    saved = None
    if not os.environ.get("GWPROXY_BENCH_NO_PIN") and hasattr(os, "sched_setaffinity"):
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {max(saved)})
    lp = new_loop()
    yield lp
    lp.close()
    if saved is not None:
        os.sched_setaffinity(0, saved)


@pytest.fixture(scope="module")
def devnull():
    fd = os.open(os.devnull, os.O_WRONLY)
    yield fd
    os.close(fd)


def _proc_cpu(pid: int) -> float:
    """CPU seconds of a (single-threaded) process: its main thread's run time from
    /proc/<pid>/schedstat (ns), else user+system from /proc/<pid>/stat (10 ms ticks)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _cpu(rt) -> tuple[float, float]:
    """(this process's CPU seconds, the runtime's workers' CPU seconds)."""
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, sum(_proc_cpu(w.proc.pid) for w in rt.idle + list(rt.busy))


def _cpu_per_invocation(loop, run, rt, k: int) -> tuple[float, float]:
    """CPU microseconds per invocation spent in this (the gateway's) process and in the
    workers, over ``run(k)``: ``k`` more invocations (the same workers throughout)."""
    pids = sorted(w.proc.pid for w in rt.idle + list(rt.busy))
    g0, w0 = _cpu(rt)
    loop.run_until_complete(run(k))
    g1, w1 = _cpu(rt)
    if sorted(w.proc.pid for w in rt.idle + list(rt.busy)) != pids:
        return 0.0, 0.0
    return (g1 - g0) / k * 1e6, (w1 - w0) / k * 1e6


def _runtime(handler: str, devnull: int, concurrency: int = 1):
    from proxy.functions.invocation import FunctionLog
    from proxy.functions.process import ProcessRuntime
    from proxy.functions.spec import FunctionSpec
    spec = FunctionSpec(name="pbench", runtime="process", handler=handler, code=FIXTURES,
                        concurrency=concurrency, queue_wait=10.0)
    return ProcessRuntime(spec, FunctionLog(spec.name, spec.memory_mb, devnull), concurrency)


def _measure(benchmark, loop, rt, run, n: int, label: str, group: str) -> None:
    def batch():
        loop.run_until_complete(run(n))
    benchmark.group = group
    benchmark(batch)
    us = benchmark.stats.stats.median / n * 1e6
    benchmark.extra_info["us_per_invocation"] = round(us, 2)
    gw_us, fn_us = _cpu_per_invocation(loop, run, rt, max(5000, n))
    benchmark.extra_info["gateway_cpu_us"] = round(gw_us, 2)
    benchmark.extra_info["worker_cpu_us"] = round(fn_us, 2)
    print(f"\n{label}: {us:.2f} us/invocation (CPU: gateway {gw_us:.1f} us, workers {fn_us:.1f} us)")


@pytest.mark.parametrize("case", list(CASES))
def test_invocation(benchmark, loop, devnull, case):
    """One invocation at a time, one warm worker."""
    from proxy.context import new_request_id

    handler, event = CASES[case]
    rt = _runtime(handler, devnull)

    async def many(k):
        invoke = rt.invoke
        res = None
        for _ in range(k):
            res = await invoke(event, new_request_id())
        return res

    try:
        res = loop.run_until_complete(many(50))      # cold start, then warm
        assert res.error is None, res.payload
        assert res.value["body"] == '{"id": 1, "name": "rex"}'
        _measure(benchmark, loop, rt, many, 200, case, "process function invocation")
        res = loop.run_until_complete(many(1))
        assert res.error is None
        if "prints" in case:
            assert "handled " + res.request_id in res.log
    finally:
        loop.run_until_complete(rt.close())


def test_saturated(benchmark, loop, devnull):
    """64 callers on a function of concurrency 8 (as loadtests/bench_functions.py's
    ``function_process`` with wrk's 64 connections): the reserved-concurrency queue, 8
    workers, the payload 1.0 event. Microseconds per invocation at saturation (pinned to
    one CPU: the CPU cost of an invocation, gateway and worker together)."""
    from proxy.context import new_request_id

    rt = _runtime("bench_handler.handler", devnull, concurrency=8)
    callers = 64

    async def one(k):
        invoke = rt.invoke
        for _ in range(k):
            res = await invoke(EVENT_V1, new_request_id())
            assert res.error is None

    async def run(k):
        await asyncio.gather(*(one(k // callers) for _ in range(callers)))

    try:
        loop.run_until_complete(run(callers * 20))
        assert len(rt.idle) == 8
        _measure(benchmark, loop, rt, run, callers * 10, "64 callers, concurrency 8, payload 1.0 event",
                 "process function, saturated")
    finally:
        loop.run_until_complete(rt.close())
