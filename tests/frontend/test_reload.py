"""SIGHUP reload under the native front end: validate, start a new generation, drain the old.

Real gateway processes (`gwproxy serve`) and a real upstream; the config file is rewritten
between the signals, as an operator (or `systemctl reload`) would.
"""
from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest

from tests.helpers import GatewayProcess
from tests.upstream import UpstreamServer

NATIVE = ["--frontend", "native"]


def _config(up: int, extra_route: str = "") -> str:
    return f"""
server:
  access_log: false
apis:
  shop:
    type: rest
    stages: {{prod: {{}}}}
    routes:
      - route: GET /hello
        integration: {{type: mock, body: {{v: 1}}}}
      - route: GET /stall
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{up}/stall", timeout: 10s}}
{extra_route}"""


NEW_ROUTE = """      - route: GET /added
        integration: {type: mock, body: {added: true}}
"""


def _get(port: int, path: str, timeout: float = 5.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def _workers(g: GatewayProcess) -> set[int]:
    return {p.pid for p in psutil.Process(g.proc.pid).children()}


def _until(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


@pytest.fixture
def upstream():
    with UpstreamServer() as u:
        yield u


def test_sighup_with_a_good_config_serves_it_without_dropping_in_flight_requests(upstream):
    with GatewayProcess(_config(upstream.port), workers=2, admin=True, extra_args=NATIVE) as g:
        assert _get(g.port, "/prod/added")[0] == 403          # not there yet
        old = _workers(g)
        assert len(old) == 2
        # a slow request in flight across the reload
        result = {}

        def slow():
            result["r"] = _get(g.port, "/prod/stall?s=1.5", timeout=10)
        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        text = Path(g.config_path).read_text()
        assert text.endswith("timeout: 10s}\n")      # the routes list ends the file
        Path(g.config_path).write_text(text + NEW_ROUTE)
        os.kill(g.proc.pid, signal.SIGHUP)
        _until(lambda: _get(g.port, "/prod/added")[0] == 200, 20, "the new route is served")
        # every connection now lands on a new worker: the old generation is gone
        _until(lambda: not (_workers(g) & old), 15, "the old workers exited")
        assert len(_workers(g)) == 2
        t.join(15)
        assert result["r"][0] == 200, result            # the in-flight request finished
        assert json.loads(_get(g.port, "/prod/added")[1]) == {"added": True}
        # the admin listener moved to the new worker 0
        assert _get(g.admin_port, "/healthz")[0] == 200
        assert g.proc.poll() is None


def test_sighup_with_a_bad_config_keeps_the_running_one(upstream):
    with GatewayProcess(_config(upstream.port), workers=1, extra_args=NATIVE) as g:
        before = _workers(g)
        good = Path(g.config_path).read_text()
        Path(g.config_path).write_text(good.replace("type: mock", "type: mokc", 1))
        os.kill(g.proc.pid, signal.SIGHUP)
        _until(lambda: "reload refused" in Path(g.log_path).read_text(), 15, "the refusal is logged")
        log = Path(g.log_path).read_text()
        assert "routes[0].integration.type" in log      # the config error, with its field
        assert _workers(g) == before                    # nothing restarted
        assert _get(g.port, "/prod/hello") == (200, b'{"v":1}')
        # and a later good config still reloads
        Path(g.config_path).write_text(good.replace("{v: 1}", "{v: 2}"))
        os.kill(g.proc.pid, signal.SIGHUP)
        _until(lambda: _get(g.port, "/prod/hello") == (200, b'{"v":2}'), 20, "the fixed config is served")
        assert g.proc.poll() is None


def test_sighup_to_the_whole_process_group_does_not_kill_workers(upstream):
    with GatewayProcess(_config(upstream.port), workers=1, extra_args=NATIVE) as g:
        before = _workers(g)
        os.killpg(g.proc.pid, signal.SIGHUP)     # a terminal hang-up reaches every process
        time.sleep(1.0)
        assert g.proc.poll() is None
        _until(lambda: _get(g.port, "/prod/hello")[0] == 200, 15, "still serving")
        # the master reloaded the (unchanged) config: new generation, old one drained
        _until(lambda: _workers(g) and not (_workers(g) & before), 15, "a new generation")
