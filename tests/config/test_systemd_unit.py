"""config/gwproxy.service: systemd accepts it, and its commands do what the unit says.

systemd itself does not run here (no init in a test), so the test runs the unit's own
ExecStartPre / ExecStart / ExecReload / KillSignal lines, with the install paths pointed at
this checkout and a temporary config, and checks the gateway starts, reloads and stops.
"""
from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, free_port, wait_port

UNIT = ROOT / "config" / "gwproxy.service"


def _unit_lines(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        k, _, v = line.partition("=")
        out.setdefault(k, []).append(v)
    return out


def _localized(cfg_path: str) -> str:
    """The unit with /opt/gwproxy -> this checkout and the config -> ``cfg_path``."""
    venv = Path(sys.executable).parent.parent
    text = UNIT.read_text()
    text = text.replace("/opt/gwproxy/.venv", str(venv)).replace("/opt/gwproxy", str(ROOT))
    return text.replace("/etc/gwproxy/gateway.yaml", cfg_path)


CONFIG = """
server:
  listen: 127.0.0.1:{port}
  access_log: false
apis:
  a:
    type: http
    routes:
      - route: GET /v
        integration: {{type: mock, body: {{v: {v}}}}}
"""


def _get(port: int):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("GET", "/v")
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_systemd_accepts_the_unit():
    if shutil.which("systemd-analyze") is None and os.environ.get("CI") != "true":
        pytest.skip("systemd-analyze not installed (./dev.sh test installs it)")
    d = tempfile.mkdtemp()
    cfg = Path(d, "gateway.yaml")
    cfg.write_text(CONFIG.format(port=free_port(), v=1))
    unit = Path(d, "gwproxy.service")
    unit.write_text(_localized(str(cfg)))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "gwproxy.service" not in r.stderr, r.stderr   # no complaint about our unit


def test_unit_commands_start_reload_and_stop_the_gateway():
    d = tempfile.mkdtemp()
    port = free_port()
    cfg = Path(d, "gateway.yaml")
    cfg.write_text(CONFIG.format(port=port, v=1))
    lines = _unit_lines(_localized(str(cfg)))
    env = dict(os.environ, **dict(e.split("=", 1) for e in lines.get("Environment", [])))
    # ExecStartPre: the config check passes
    for cmd in lines["ExecStartPre"]:
        assert subprocess.run(cmd.split(), env=env, cwd=str(ROOT), capture_output=True,
                              timeout=60).returncode == 0, cmd
    (start,) = lines["ExecStart"]
    log = open(Path(d, "log"), "wb")
    main = subprocess.Popen(start.split(), env=env, cwd=lines["WorkingDirectory"][0],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_port("127.0.0.1", port, 20, main)
        assert _get(port) == (200, b'{"v":1}')
        # ExecReload, with a broken config: the check refuses it, the gateway keeps running
        cfg.write_text(CONFIG.format(port=port, v=1).replace("type: mock", "type: nope"))
        first = lines["ExecReload"][0]
        assert subprocess.run(first.split(), env=env, capture_output=True, timeout=60).returncode != 0
        assert _get(port) == (200, b'{"v":1}')
        # ExecReload, with a good config: check, then HUP to $MAINPID
        cfg.write_text(CONFIG.format(port=port, v=2))
        for cmd in lines["ExecReload"]:
            cmd = cmd.replace("$MAINPID", str(main.pid))
            assert subprocess.run(cmd.split(), env=env, capture_output=True, timeout=60).returncode == 0, cmd
        deadline = time.monotonic() + 20
        while _get(port) != (200, b'{"v":2}'):
            assert time.monotonic() < deadline, "reload not served"
            time.sleep(0.1)
        # KillSignal: stops cleanly within TimeoutStopSec
        main.send_signal(getattr(signal, lines["KillSignal"][0]))
        assert main.wait(int(lines["TimeoutStopSec"][0])) == 0
    finally:
        if main.poll() is None:
            os.killpg(main.pid, signal.SIGKILL)
        log.close()
