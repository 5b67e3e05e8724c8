"""Node-wide limits: `gwproxy serve --workers 2` with the memory store holds the
configured rate for the whole node (not twice over). A real server, real sockets."""
from __future__ import annotations

import json
import time

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


def _wait_listening(root: psutil.Process, port: int, n: int, timeout: float = 20.0) -> None:
    """Wait until ``n`` worker processes listen on ``port``: the port answers as soon as the
    first one does, and keep-alive connections opened before the second listens would all
    stay on the first."""
    deadline = time.monotonic() + timeout
    while True:
        listening = 0
        for c in root.children(recursive=True):
            try:
                if any(k.status == psutil.CONN_LISTEN and k.laddr.port == port
                       for k in c.net_connections(kind="tcp")):
                    listening += 1
            except psutil.Error:
                pass
        if listening >= n or time.monotonic() > deadline:
            assert listening >= n, f"{listening} of {n} workers listening"
            return
        time.sleep(0.05)


def test_two_workers_hold_the_node_wide_rate():
    with GatewayProcess(CONFIG, workers=2, admin=True) as gw:
        root = psutil.Process(gw.proc.pid)
        _wait_listening(root, gw.port, 2)
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


KEYED = """
server:
  workers: 2
  access_log: false
api_keys:
  alice: {sha256: %s}
usage_plans:
  gold: {stages: [shop/prod], keys: [alice], throttle: {rate: 1000, burst: 1000},
         quota: {limit: 1000000, period: DAY}}
apis:
  shop:
    type: rest
    stages: {prod: {}}
    routes:
      - route: GET /k
        api_key_required: true
        integration: {type: mock, body: {ok: true}}
"""


def test_keys_usage_and_disable_across_two_workers():
    import hashlib
    import time
    digest = hashlib.sha256(b"alice-secret").hexdigest()
    with GatewayProcess(KEYED % digest, workers=2, admin=True) as gw:
        h = {"x-api-key": "alice-secret"}
        # fresh connections: granian spreads them over both workers
        statuses = [gw.request("GET", "/prod/k", headers=h)[0] for _ in range(40)]
        assert statuses == [200] * 40
        assert gw.request("GET", "/prod/k", headers={"x-api-key": "nope"})[0] == 403
        day = time.strftime("%Y-%m-%d", time.gmtime())
        st, _, body = gw.request("GET", f"/usageplans/gold/usage?startDate={day}&endDate={day}",
                                 admin=True)
        assert st == 200 and json.loads(body)["items"] == {"alice": [[40, 1000000 - 40]]}
        st, _, body = gw.request("POST", "/apikeys/alice/disable", admin=True)
        assert st == 200 and json.loads(body)["enabled"] is False
        time.sleep(1.2)                      # the other worker re-reads flags every 0.5 s
        assert [gw.request("GET", "/prod/k", headers=h)[0] for _ in range(20)] == [403] * 20
        gw.request("POST", "/apikeys/alice/enable", admin=True)
        time.sleep(1.2)
        assert [gw.request("GET", "/prod/k", headers=h)[0] for _ in range(20)] == [200] * 20
        keys = json.loads(gw.request("GET", "/apikeys", admin=True)[2])["items"]
        assert keys[0]["name"] == "alice" and keys[0]["enabled"] is True
