"""Node-wide limits: `gwproxy serve --workers 2` with the memory store holds the
configured rate for the whole node (not twice over). A real server, real sockets."""
from __future__ import annotations

import json

import psutil
import pytest

from tests.helpers import GatewayProcess

from .load import hammer

pytestmark = pytest.mark.slow

RATE = 200
BURST = 20
SECONDS = 5.0

CONFIG = f"""
server:
  workers: 2
  access_log: false
throttle: {{enabled: false}}
apis:
  shop:
    type: rest
    stages: {{prod: {{}}}}
    routes:
      - route: GET /limited
        throttle: {{rate: {RATE}, burst: {BURST}}}
        integration: {{type: mock, body: {{ok: true}}}}
"""


def _worker_cpu(proc: psutil.Process) -> dict[int, float]:
    out = {}
    for c in proc.children(recursive=True):
        try:
            t = c.cpu_times()
            out[c.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def test_two_workers_hold_the_node_wide_rate():
    with GatewayProcess(CONFIG, workers=2, admin=True) as gw:
        root = psutil.Process(gw.proc.pid)
        before = _worker_cpu(root)
        counts = hammer([("127.0.0.1", gw.port)], "/prod/limited", SECONDS, conns=16)
        after = _worker_cpu(root)
        status, _, body = gw.request("GET", "/state", admin=True)
        state = json.loads(body)
    accepted = counts[200]
    assert counts[429] > accepted, counts                         # the load exceeded the limit
    assert counts["err"] == 0, counts
    rate = (accepted - BURST) / SECONDS
    assert abs(rate - RATE) <= 0.10 * RATE, (counts, rate)
    # both workers served requests (otherwise this would not test sharing at all)
    busy = [after[p] - before.get(p, 0.0) for p in after]
    busy.sort(reverse=True)
    # (each worker must see more than the rate, else per-worker buckets would pass too)
    assert len(busy) >= 2 and busy[1] > 0.08 * busy[0] and busy[1] > 0.15, busy
    assert state["backend"] == "memory" and state["shared"] is True
