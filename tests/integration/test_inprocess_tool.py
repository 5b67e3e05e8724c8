"""loadtests/inprocess.py runs, and the paths it measures answer at once.

The tool drives the real front end, app and upstream client through fake transports and
exits non-zero when an answer was not written during the call that made it ready (a plain
proxied request, a mock, a cache hit): a regression of the callback path fails here.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_inprocess_tool_measures_the_synchronous_paths(pure):
    cmd = [sys.executable, str(ROOT / "loadtests" / "inprocess.py"), "--requests", "300",
           "--rounds", "1"] + (["--pure"] if pure else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert out.returncode == 0, out.stderr[-2000:]
    got = dict(re.findall(r"^(\w+)\s+CPU per request: median ([0-9.]+) us", out.stdout, re.M))
    assert set(got) == {"plain", "mock", "cache_hit"}, out.stdout
    assert all(float(v) > 0 for v in got.values())
    assert ("gwcore: python" in out.stdout) == pure
