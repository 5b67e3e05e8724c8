"""`gwproxy check` reports function problems before the first request, one line each with
file, line and field."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.helpers import ROOT

from .conftest import FIXTURES

BAD = """
functions:
  syntax: {handler: broken_syntax.handler, code: "{fixtures}"}
  missing_module: {handler: no_such_module_xyz.handler, code: "{fixtures}", runtime: inline}
  missing_attr: {handler: basic.not_there, code: "{fixtures}"}
  import_error: {handler: broken_import.handler, code: "{fixtures}"}
  no_code: {handler: app.handler, code: ./does-not-exist}
  bad_cmd: {handler: app.handler, code: "{fixtures}", runtime: runtime-api, command: [no-such-binary-xyz]}
  good: {handler: basic.echo, code: "{fixtures}"}
apis:
  shop:
    type: rest
    stages: {prod: {}}
    routes:
      - route: GET /a
        integration: {type: aws_proxy, function: good, payload_format: "2.0"}
      - route: GET /b
        integration: {type: aws_proxy, function: ghost}
"""


def run_check(tmp_path, text):
    p = tmp_path / "gw.yaml"
    p.write_text(textwrap.dedent(text).replace("{fixtures}", FIXTURES))
    r = subprocess.run([sys.executable, "-m", "proxy.cli", "check", str(p)], cwd=str(ROOT),
                       capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr, str(p)


def test_check_reports_each_problem(tmp_path):
    rc, out, path = run_check(tmp_path, BAD)
    assert rc != 0
    lines = [ln for ln in out.splitlines() if ln.startswith(path)]
    text = "\n".join(lines)
    assert f"{path}:3: functions.syntax.handler: Syntax error in module 'broken_syntax'" in text
    assert f"{path}:4: functions.missing_module.handler: Unable to import module 'no_such_module_xyz'" in text
    assert f"{path}:5: functions.missing_attr.handler: Handler 'not_there' missing on module 'basic'" in text
    assert "functions.import_error.handler: Unable to import module 'broken_import': No module named " \
           "'module_that_does_not_exist_gw'" in text
    assert "functions.no_code.code: code directory" in text
    assert "functions.bad_cmd.command: command 'no-such-binary-xyz' not found" in text
    assert "payload_format: REST APIs send payload format '1.0' only" in text
    assert "function: no function named 'ghost'" in text
    assert "functions.good" not in text
    assert "Traceback" not in out


def test_check_passes_and_imports_nothing_in_the_gateway(tmp_path):
    rc, out, _ = run_check(tmp_path, """
        functions:
          good: {handler: basic.echo, code: "{fixtures}", runtime: inline}
        apis:
          h:
            type: http
            routes:
              - {route: GET /a, integration: {type: aws_proxy, function: good}}
    """)
    assert rc == 0, out


def test_check_leaves_the_handler_unimported():
    from proxy.config import load_config_text
    from proxy.functions import service
    cfg, loc = load_config_text(textwrap.dedent("""
        functions:
          good: {handler: fastapi_app.handler, code: "%s", runtime: inline}
          bad: {handler: basic.nope, code: "%s", runtime: inline}
        apis: {}
    """ % (FIXTURES, FIXTURES)), "/tmp/x.yaml")
    problems = service.check(cfg, loc)
    assert len(problems) == 1 and "Handler 'nope' missing on module 'basic'" in problems[0]
    assert "fastapi_app" not in sys.modules and "basic" not in sys.modules
    assert FIXTURES not in sys.path
