"""VPC links end to end: a real gateway, real backends (in-process or killable processes)."""
from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections import Counter

import pytest

from tests.helpers import GatewayProcess, free_port, http_request
from tests.upstream import UpstreamServer
from tests.vpc.procs import Backend


def _gateway(links: str, routes: str = "", *, timeout: str = "5s", link: str = "orders") -> GatewayProcess:
    cfg = f"""
vpc_links:
{links}
apis:
  shop:
    type: rest
    stages: {{prod: {{}}}}
    routes:
      - route: ANY /o/{{proxy+}}
        integration: {{type: http_proxy, vpc_link: {link}, uri: "http://orders.internal/{{proxy}}", timeout: {timeout}}}
{routes}
"""
    return GatewayProcess(cfg, admin=True).start()


def _links(gw) -> dict:
    status, _, body = gw.request("GET", "/vpc_links", admin=True)
    assert status == 200
    return json.loads(body)


def _target(gw, link, address) -> dict:
    for t in _links(gw)[link]["targets"]:
        if t["address"] == address:
            return t
    raise KeyError(address)


def _wait(cond, timeout=8.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


# -- balancing --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_upstreams():
    with UpstreamServer() as a, UpstreamServer() as b:
        yield a, b


def _echo_counts(a, b, before):
    return (sum(1 for r in a.received[before[0]:] if r.get("path", "").startswith("/echo")),
            sum(1 for r in b.received[before[1]:] if r.get("path", "").startswith("/echo")))


def test_round_robin_spreads_evenly_and_sends_link_host(two_upstreams):
    a, b = two_upstreams
    gw = _gateway(f"""  orders:
    targets: ["127.0.0.1:{a.port}", "127.0.0.1:{b.port}"]""")
    try:
        before = (len(a.received), len(b.received))
        for i in range(20):
            status, _, body = gw.request("GET", f"/prod/o/echo/{i}")
            assert status == 200, body
            rec = json.loads(body)
            assert rec["path"] == f"/echo/{i}"
            assert ["host", "orders.internal"] in rec["headers"]
        assert _echo_counts(a, b, before) == (10, 10)
    finally:
        gw.stop()


def test_weighted_round_robin(two_upstreams):
    a, b = two_upstreams
    gw = _gateway(f"""  orders:
    targets: [{{address: "127.0.0.1:{a.port}", weight: 3}}, {{address: "127.0.0.1:{b.port}", weight: 1}}]""")
    try:
        before = (len(a.received), len(b.received))
        for i in range(40):
            assert gw.request("GET", f"/prod/o/echo/w{i}")[0] == 200
        assert _echo_counts(a, b, before) == (30, 10)
    finally:
        gw.stop()


def test_weight_zero_target_is_drained(two_upstreams):
    a, b = two_upstreams
    gw = _gateway(f"""  orders:
    targets: ["127.0.0.1:{a.port}", {{address: "127.0.0.1:{b.port}", weight: 0}}]""")
    try:
        before = (len(a.received), len(b.received))
        for i in range(6):
            assert gw.request("GET", f"/prod/o/echo/d{i}")[0] == 200
        assert _echo_counts(a, b, before) == (6, 0)
        assert _target(gw, "orders", f"127.0.0.1:{b.port}")["state"] == "drained"
    finally:
        gw.stop()


def test_least_request_avoids_the_busy_target(two_upstreams):
    a, b = two_upstreams
    gw = _gateway(f"""  orders:
    balance: least_request
    targets: ["127.0.0.1:{a.port}", "127.0.0.1:{b.port}"]""")
    try:
        slow = threading.Thread(target=gw.request, args=("GET", "/prod/o/stall?s=1.5"))
        slow.start()
        # wait until the slow request is in flight on one target
        assert _wait(lambda: sum(t["in_flight"] for t in _links(gw)["orders"]["targets"]) == 1)
        busy = [t["address"] for t in _links(gw)["orders"]["targets"] if t["in_flight"]][0]
        before = (len(a.received), len(b.received))
        for i in range(10):
            assert gw.request("GET", f"/prod/o/echo/l{i}")[0] == 200
        counts = _echo_counts(a, b, before)
        free_side = 1 if busy.endswith(f":{a.port}") else 0
        assert counts[free_side] == 10 and counts[1 - free_side] == 0, (busy, counts)
        slow.join()
    finally:
        gw.stop()


# -- unix socket targets -------------------------------------------------------------------------

def test_unix_socket_target():
    d = tempfile.mkdtemp(prefix="gwvpc-")
    sock = os.path.join(d, "orders.sock")
    with Backend("unixy", unix=sock):
        gw = _gateway(f"""  orders:
    targets: ["unix:{sock}"]
    health_check: {{path: /health, interval: 0.2s}}""")
        try:
            status, headers, body = gw.request("GET", "/prod/o/echo/u?x=1")
            assert status == 200, body
            assert headers["x-backend"] == "unixy"
            rec = json.loads(body)
            assert rec["target"] == "/echo/u?x=1"
            assert ["host", "orders.internal"] in rec["headers"]
            t = _wait(lambda: _target(gw, "orders", f"unix:{sock}")["health_check"]["passes_in_a_row"] >= 1 and
                      _target(gw, "orders", f"unix:{sock}"))
            assert t["state"] == "healthy" and "status 200" in t["reason"]
        finally:
            gw.stop()


# -- failure handling ------------------------------------------------------------------------------

def test_target_killed_during_stream_of_gets_is_ejected_and_returns():
    pa, pb = free_port(), free_port()
    a = Backend("a", listen=f"127.0.0.1:{pa}").start()
    b = Backend("b", listen=f"127.0.0.1:{pb}").start()
    gw = _gateway(f"""  orders:
    targets: ["127.0.0.1:{pa}", "127.0.0.1:{pb}"]
    outlier: {{consecutive_failures: 2, base_ejection_time: 1s, max_ejection_percent: 50}}
    retries: {{attempts: 1}}""")
    try:
        served = []
        statuses = []
        for i in range(120):
            if i == 30:
                b.kill()
            status, headers, _ = gw.request("GET", f"/prod/o/echo/k{i}")
            statuses.append(status)
            served.append(headers.get("x-backend"))
            time.sleep(0.003)
        # no client-visible error: every failure on b was within the retry budget
        assert Counter(statuses) == {200: 120}, Counter(statuses)
        assert "b" in served[:30] and set(served[40:]) == {"a"}
        tb = _target(gw, "orders", f"127.0.0.1:{pb}")
        assert tb["ejections"] >= 1 and "connect" in (tb["last_error"] or "")
        if tb["state"] == "ejected":
            assert "consecutive failures" in tb["reason"]
        assert "ejected" in gw.logs() and f"127.0.0.1:{pb}" in gw.logs()
        # b recovers: it gets traffic again once its ejection time is over
        b = Backend("b", listen=f"127.0.0.1:{pb}").start()

        def b_serves():
            return gw.request("GET", "/prod/o/echo/back")[1].get("x-backend") == "b"
        assert _wait(b_serves, timeout=10.0, step=0.1)
        assert _target(gw, "orders", f"127.0.0.1:{pb}")["state"] == "healthy"
    finally:
        gw.stop()
        a.kill()
        b.kill()


def test_all_targets_down_503_with_retry_after():
    p1, p2 = free_port(), free_port()   # nothing listens there
    gw = _gateway(f"""  orders:
    targets: ["127.0.0.1:{p1}", "127.0.0.1:{p2}"]
    outlier: {{consecutive_failures: 1, base_ejection_time: 20s, max_ejection_percent: 100}}""")
    try:
        for _ in range(4):   # first by connect failures, then with every target ejected
            status, headers, body = gw.request("GET", "/prod/o/echo/x")
            assert status == 503
            assert json.loads(body) == {"message": "Service Unavailable"}
            assert int(headers["retry-after"]) >= 1
            assert str(p1) not in body.decode() and "127.0.0.1" not in body.decode()
        status, headers, _ = gw.request("GET", "/prod/o/echo/x")
        assert 10 <= int(headers["retry-after"]) <= 20   # until the first target may be back
        info = _links(gw)["orders"]
        assert info["healthy_targets"] == 0
        assert {t["state"] for t in info["targets"]} == {"ejected"}
    finally:
        gw.stop()


def test_unhealthy_by_active_check_leaves_rotation():
    pa, pb = free_port(), free_port()
    with Backend("a", listen=f"127.0.0.1:{pa}"), Backend("b", listen=f"127.0.0.1:{pb}", health_status=503):
        gw = _gateway(f"""  orders:
    targets: ["127.0.0.1:{pa}", "127.0.0.1:{pb}"]
    health_check: {{path: /health, interval: 0.1s, timeout: 1s, unhealthy_threshold: 2, healthy_threshold: 1}}""")
        try:
            tb = _wait(lambda: (t := _target(gw, "orders", f"127.0.0.1:{pb}"))["state"] == "unhealthy" and t)
            assert tb, _links(gw)
            assert tb["reason"] == "health check got status 503"
            assert "unhealthy" in gw.logs()
            served = {gw.request("GET", f"/prod/o/echo/h{i}")[1]["x-backend"] for i in range(8)}
            assert served == {"a"}
        finally:
            gw.stop()


def test_slow_target_times_out_with_504_and_is_not_retried(two_upstreams):
    a, b = two_upstreams
    gw = _gateway(f"""  orders:
    targets: ["127.0.0.1:{a.port}", "127.0.0.1:{b.port}"]
    retries: {{attempts: 3}}""", timeout="500ms")
    try:
        t0 = time.monotonic()
        status, _, body = gw.request("GET", "/prod/o/stall?s=3")
        took = time.monotonic() - t0
        assert status == 504, body
        assert json.loads(body) == {"message": "Endpoint request timed out"}
        assert 0.45 <= took < 1.4, took
    finally:
        gw.stop()


def test_post_reset_after_send_is_not_retried_but_get_is(two_upstreams):
    a, b = two_upstreams
    gw = _gateway(f"""  orders:
    targets: ["127.0.0.1:{a.port}", "127.0.0.1:{b.port}"]
    retries: {{attempts: 2}}
    outlier: {{consecutive_failures: 100}}""")

    def resets():
        return sum(1 for r in a.received + b.received if r.get("path") == "/reset")
    try:
        n0 = resets()
        status, _, body = gw.request("POST", "/prod/o/reset", body=b'{"order": 1}',
                                     headers={"Content-Type": "application/json"})
        assert status == 502, body
        assert json.loads(body) == {"message": "Bad Gateway"}
        time.sleep(0.2)
        assert resets() - n0 == 1          # the backend saw the POST exactly once
        n1 = resets()
        status, _, _ = gw.request("GET", "/prod/o/reset")
        assert status == 502
        time.sleep(0.2)
        assert resets() - n1 == 3          # first try + 2 retries (idempotent)
    finally:
        gw.stop()


def test_circuit_breaker_limits_concurrent_requests(two_upstreams):
    a, _ = two_upstreams
    gw = _gateway(f"""  orders:
    targets: ["127.0.0.1:{a.port}"]
    circuit_breaker: {{max_requests: 1}}""")
    try:
        slow = threading.Thread(target=gw.request, args=("GET", "/prod/o/stall?s=1"))
        slow.start()
        assert _wait(lambda: _links(gw)["orders"]["targets"][0]["in_flight"] == 1)
        status, headers, body = gw.request("GET", "/prod/o/echo/overflow")
        assert status == 503 and json.loads(body) == {"message": "Service Unavailable"}
        assert headers["retry-after"] == "1"
        slow.join()
        assert gw.request("GET", "/prod/o/echo/after")[0] == 200
    finally:
        gw.stop()


def test_private_link_target_cannot_be_named_in_plain_uri(tmp_path):
    from proxy.config import ConfigError, load_config_text
    from proxy.gateway import compile_gateway
    text = """
vpc_links:
  orders: {targets: ["10.231.9.2:8080"]}
apis:
  shop:
    type: rest
    stages: {prod: {variables: {up: "10.231.9.2:8080"}}}
    routes:
      - route: GET /direct
        integration: {type: http_proxy, uri: "http://${stageVariables.up}/x"}
      - route: GET /linked
        integration: {type: http_proxy, vpc_link: orders, uri: "http://orders/x"}
      - route: GET /missing
        integration: {type: http_proxy, vpc_link: nope, uri: "http://orders/x"}
"""
    cfg, loc = load_config_text(text, "gw.yaml")
    with pytest.raises(ConfigError) as ei:
        compile_gateway(cfg, loc)
    msg = str(ei.value)
    assert "gw.yaml:10: apis.shop.routes[0].integration.uri: the URI names a target of private vpc_link 'orders'" in msg
    assert "no vpc_links entry named 'nope'" in msg
    assert "routes[1]" not in msg
    # the same address is fine once the link says it is not private
    cfg, loc = load_config_text(text.replace('targets: ["10.231.9.2:8080"]',
                                             'targets: ["10.231.9.2:8080"], private: false')
                                .replace("vpc_link: nope", "vpc_link: orders"), "gw.yaml")
    compile_gateway(cfg, loc)
