"""The whole end-to-end suite again, on the granian front end.

`gwproxy serve` takes its front end from --frontend, else $GWPROXY_FRONTEND, else
server.frontend (proxy/cli.py, cmd_serve); tests.helpers.GatewayProcess passes the test
process's environment on, so GWPROXY_FRONTEND=granian runs every gateway of
test_proxy_e2e.py on granian.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT, GatewayProcess

E2E = "tests/integration/test_proxy_e2e.py"


def _frontend_of(env_value: str) -> str:
    """Which front end a gateway started with GWPROXY_FRONTEND=env_value really runs:
    granian hands the app the decoded path, so /files/a%2Fb reaches GET /files/{a}/{b}
    (README, "Routing rules"); the native front end keeps %2F (400)."""
    cfg = """
apis:
  web:
    type: http
    routes:
      - route: GET /files/{a}/{b}
        integration: {type: mock, body: "split"}
"""
    env = dict(GWPROXY_FRONTEND=env_value)
    with GatewayProcess(cfg, env=env) as g:
        status, _, body = g.request("GET", "/files/a%2Fb")
    if (status, body) == (200, b"split"):
        return "granian"
    assert status == 400, (status, body)
    return "native"


def test_gwproxy_frontend_env_selects_the_front_end():
    assert _frontend_of("granian") == "granian"
    assert _frontend_of("native") == "native"


@pytest.mark.slow
def test_e2e_suite_passes_on_granian():
    env = dict(os.environ, GWPROXY_FRONTEND="granian")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", E2E],
                       cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout[-6000:] + r.stderr[-2000:]
    assert r.returncode == 0, out
    assert " passed" in r.stdout and " failed" not in r.stdout, out
