#!/usr/bin/env python3
"""Run one locust scenario headless against a fresh gateway; CSV + HTML under loadtests/results/.

    python loadtests/locust_scenarios.py plain       # http_proxy to an nginx backend
    python loadtests/locust_scenarios.py inline      # aws_proxy, inline function
    python loadtests/locust_scenarios.py process     # aws_proxy, warm process pool
    python loadtests/locust_scenarios.py cached      # stage cache on (hits after warm-up)
    python loadtests/locust_scenarios.py throttled   # API key + usage-plan throttle (200s and 429s)
    python loadtests/locust_scenarios.py mix         # all of them, weighted, plus a POST
    python loadtests/locust_scenarios.py all         # each of the above in turn

Options: ``--users 64 --spawn-rate 64 --run-time 30s`` (locust's -u/-r/-t),
``--locust-processes N`` (locust's --processes: more load generators), ``--workers N``
(gateway workers), ``--write-config FILE --backend URL`` (only write the gateway config,
to run locust by hand, see loadtests/locustfile.py).

Each run starts an nginx backend and ``gwproxy serve`` on free loopback ports, runs
``locust -f loadtests/locustfile.py --headless ... <UserClass>`` and writes
``loadtests/results/locust-<scenario>-<timestamp>_{stats,stats_history,failures,exceptions}.csv``
and ``...html``; then prints locust's summary and the gateway's memory. The exit status is
locust's (non-zero when any request failed).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests import harness as h  # noqa: E402

USERS = {
    "plain": "PlainProxyUser",
    "inline": "InlineFunctionUser",
    "process": "ProcessFunctionUser",
    "cached": "CachedUser",
    "throttled": "ThrottledUser",
    "mix": "MixUser",
}
API_KEY = os.environ.get("GWPROXY_LOCUST_API_KEY", "locust-bench-key-0123456789abcdef")
#: the throttled route's usage plan: low enough that locust sees 429s on this machine
THROTTLE = {"rate": 500, "burst": 1000}
FUNCTIONS_DIR = ROOT / "loadtests" / "functions"


def config(backend: str, workers: int = 1) -> str:
    """One REST API per scenario, base path = its name, stage ``b``."""
    key_hash = hashlib.sha256(API_KEY.encode()).hexdigest()
    pets = f'uri: "{backend}/pets/{{id}}"'
    return f"""# written by loadtests/locust_scenarios.py
server:
  workers: {workers}
  access_log: false
{h.ACCOUNT_THROTTLE}functions:
  locust_inline: {{handler: locust_fn.handler, code: "{FUNCTIONS_DIR}", runtime: inline,
                  concurrency: 64, queue_wait: 10s}}
  locust_process: {{handler: locust_fn.handler, code: "{FUNCTIONS_DIR}", runtime: process,
                   concurrency: 4, queue_wait: 10s}}
api_keys:
  locust: {{sha256: "{key_hash}"}}
usage_plans:
  locust:
    stages: [throttled/b]
    throttle: {{rate: {THROTTLE['rate']}, burst: {THROTTLE['burst']}}}
    keys: [locust]
apis:
  plain:
    type: rest
    base_path: /plain
    stages: {{b: {{}}}}
    routes:
      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, {pets}}}
      - route: POST /pets
        integration: {{type: http_proxy, uri: "{backend}/pets"}}
  inline:
    type: rest
    base_path: /inline
    stages: {{b: {{}}}}
    routes:
      - route: GET /pets/{{id}}
        integration: {{type: aws_proxy, function: locust_inline}}
  process:
    type: rest
    base_path: /process
    stages: {{b: {{}}}}
    routes:
      - route: GET /pets/{{id}}
        integration: {{type: aws_proxy, function: locust_process}}
  cached:
    type: rest
    base_path: /cached
    stages:
      b: {{cache: {{enabled: true, ttl: 3600, capacity_mb: 64}}}}
    routes:
      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, {pets}}}
  throttled:
    type: rest
    base_path: /throttled
    stages: {{b: {{}}}}
    routes:
      - route: GET /pets/{{id}}
        api_key_required: true
        integration: {{type: http_proxy, {pets}}}
"""


def run_one(scenario: str, args, tmp: str, port: int, gw) -> int:
    h.RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = h.RESULTS / f"locust-{scenario}-{stamp}"
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
           "-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.run_time,
           "--host", f"http://127.0.0.1:{port}", "--csv", str(base), "--html", f"{base}.html",
           "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING"]
    if args.locust_processes > 1:
        cmd += ["--processes", str(args.locust_processes)]
    cmd.append(USERS[scenario])
    env = dict(os.environ, GWPROXY_LOCUST_API_KEY=API_KEY)
    print(f"== {scenario}: {' '.join(cmd[2:])}", flush=True)
    rc = subprocess.run(cmd, env=env, cwd=str(ROOT)).returncode
    mem = h.tree_memory(gw.pid)
    print(f"== {scenario}: gateway memory after the run: RSS {mem['rss_mb']} MB "
          f"(PSS {mem['pss_mb']} MB, {mem['processes']} processes); reports: {base}_stats.csv, {base}.html",
          flush=True)
    return rc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", nargs="?", choices=[*USERS, "all"])
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--spawn-rate", type=float, default=64)
    ap.add_argument("--run-time", default="30s")
    ap.add_argument("--locust-processes", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    ap.add_argument("--write-config", help="only write the gateway config here (needs --backend)")
    ap.add_argument("--backend", help="backend base URL for --write-config, e.g. http://127.0.0.1:9000")
    args = ap.parse_args(argv)
    if args.write_config:
        if not args.backend:
            ap.error("--write-config needs --backend")
        Path(args.write_config).write_text(config(args.backend.rstrip("/"), args.workers))
        print(f"wrote {args.write_config}")
        return 0
    if not args.scenario:
        ap.error("a scenario is required")
    h.raise_nofile()
    tmp = tempfile.mkdtemp(prefix="gwlocust-")
    backend, bport = h.start_backend(tmp)
    rc = 0
    try:
        cfg = Path(tmp, "gateway.yaml")
        cfg.write_text(config(f"http://127.0.0.1:{bport}", args.workers))
        gw, port, started = h.start_gateway(cfg, Path(tmp, "gateway.log"), args.workers)
        print(f"gateway up on 127.0.0.1:{port} in {started:.1f} s (config {cfg}, log {tmp}/gateway.log)")
        try:
            for sc in (list(USERS) if args.scenario == "all" else [args.scenario]):
                rc = max(rc, run_one(sc, args, tmp, port, gw))
        finally:
            gw.stop()
    finally:
        backend.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
