"""Several gateway nodes sharing one real Redis: the fleet-wide limit holds, and a Redis
outage behaves as configured (open / closed) and heals by itself. Real processes."""
from __future__ import annotations

import json
import threading

import pytest

from tests.helpers import GatewayProcess

from .load import hammer

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def config(url: str, rate: float, burst: int, on_failure: str = "open") -> str:
    return f"""
server:
  workers: 1
  access_log: false
state: {{backend: redis, url: "{url}", on_failure: {on_failure}, timeout: 200ms}}
throttle: {{enabled: false}}
apis:
  shop:
    type: rest
    stages: {{prod: {{}}}}
    routes:
      - route: GET /limited
        throttle: {{rate: {rate}, burst: {burst}}}
        integration: {{type: mock, body: {{ok: true}}}}
"""


def test_two_nodes_share_a_100_per_s_limit(redis_server):
    rate, burst, seconds = 100, 10, 10.0
    a = GatewayProcess(config(redis_server.url, rate, burst), admin=True).start()
    b = GatewayProcess(config(redis_server.url, rate, burst), admin=True).start()
    try:
        counts = hammer([("127.0.0.1", a.port), ("127.0.0.1", b.port)], "/prod/limited",
                        seconds, conns=12)
        sa = json.loads(a.request("GET", "/state", admin=True)[2])
        sb = json.loads(b.request("GET", "/state", admin=True)[2])
    finally:
        a.stop()
        b.stop()
    assert counts["err"] == 0, counts
    assert counts[429] > counts[200], counts
    measured = (counts[200] - burst) / seconds
    assert abs(measured - rate) <= 0.10 * rate, (counts, measured)
    # both nodes decided through Redis
    assert sa["decisions"] > 100 and sb["decisions"] > 100, (sa, sb)
    assert sa["up"] and sb["up"]


def window(timeline, t0, t1):
    out: dict = {}
    for t, st in timeline:
        if t0 <= t < t1:
            out[st] = out.get(st, 0) + 1
    return out


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_redis_outage_mid_run_then_recovery(redis_server, mode):
    rate, burst = 50, 5
    gw = GatewayProcess(config(redis_server.url, rate, burst, mode), admin=True).start()
    timeline: list = []
    stop_at, restart_at, total = 2.0, 4.0, 6.5
    t_stop = threading.Timer(stop_at, redis_server.stop)
    t_start = threading.Timer(restart_at, redis_server.start)
    try:
        t_stop.start()
        t_start.start()
        counts = hammer([("127.0.0.1", gw.port)], "/prod/limited", total, conns=6, timeline=timeline)
        t_stop.join()
        t_start.join()
        stats = json.loads(gw.request("GET", "/throttle", admin=True)[2])
        alive = gw.proc.poll() is None
        logs = gw.logs()
    finally:
        t_stop.cancel()
        t_start.cancel()
        gw.stop()
    assert alive, logs
    assert counts["err"] == 0, counts
    before = window(timeline, 0.5, stop_at - 0.1)
    down = window(timeline, stop_at + 0.5, restart_at - 0.1)
    # before: throttled at the configured rate
    assert before.get(429, 0) > before.get(200, 0) > 0, before
    # down: open lets everything through, closed answers 503 -- and nothing else
    expected = 200 if mode == "open" else 503
    assert set(down) == {expected} and down[expected] > 100, down
    # after: recovered by itself soon after Redis returned, throttling at the rate again
    recovered = min((t for t, st in timeline if t >= restart_at and st == 429), default=None)
    assert recovered is not None and recovered - restart_at < 2.0, \
        [window(timeline, x / 4, x / 4 + 0.25) for x in range(int(total * 4))]
    after = window(timeline, recovered + 0.3, total)
    assert set(after) <= {200, 429} and after.get(429, 0) > 0, after
    secs = total - (recovered + 0.3)
    assert after.get(200, 0) <= rate * secs * 1.2 + burst, after
    assert stats["state"]["up"] is True and stats["state"]["outages"] >= 1, stats
    assert stats["state"]["failed_" + mode] >= down[expected], stats
    assert "unreachable" in logs and "reachable again" in logs, logs
