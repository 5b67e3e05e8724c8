"""Throttling benchmarks (issue 5). Two uses:

1. Scenarios for ``loadtests/compare.py`` (gateway vs nginx in the same run)::

       python loadtests/compare.py --scenarios throttle_local,apikey_plan

   - ``throttle_local``: route + stage + account buckets (memory store), limits out of
     reach, so every request is checked and accepted;
   - ``apikey_plan``: the same route with ``api_key_required`` and a usage plan (per-key
     bucket, quota and usage counters), key sent on every request.

2. The issue's own targets, gateway against gateway, same backend, same run::

       python loadtests/bench_throttle.py [--duration 10] [--rounds 3] [--workers 1]
                                          [--connections 64] [--integration http_proxy|mock]

   Configs, each measured with wrk in alternating rounds (median of rounds):
   ``unthrottled`` (no level at all: the route gets no throttle stage), ``local``
   (route + stage + account buckets, memory store), ``local_key`` (plus API key and
   plan), ``redis`` (the same as ``local`` with ``state.backend: redis`` on a throwaway
   redis-server). Prints requests/s and the ratios the issue sets:
   ``local / unthrottled >= 0.95`` and ``redis / local >= 0.5``.
   Needs nginx (backend), wrk and redis-server.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BENCH_KEY = "bench-key-0123456789abcdefghijklmnopqrst"
OUT_OF_REACH = "{rate: 1000000000, burst: 1000000000}"


def _key_config() -> str:
    digest = hashlib.sha256(BENCH_KEY.encode()).hexdigest()
    return f"""api_keys:
  bench: {{sha256: {digest}}}
usage_plans:
  benchplan:
    stages: [bench/b]
    keys: [bench]
    throttle: {OUT_OF_REACH}
    quota: {{limit: 1000000000000, period: MONTH}}
"""


def scenarios(backend: int, root) -> list[dict]:
    up = f"http://127.0.0.1:{backend}"
    stage = f"        throttle: {OUT_OF_REACH}\n"
    return [
        {
            "key": "throttle_local",
            "name": "throttled route (memory)",
            "gw_routes": f"""      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, uri: "{up}/pets/{{id}}"}}
        throttle: {OUT_OF_REACH}
""",
            "gw_path": "/b/pets/1",
            "nginx_path": "/pets/1",
            "stage_extra": stage,
        },
        {
            "key": "apikey_plan",
            "name": "API key + usage plan",
            "gw_routes": f"""      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, uri: "{up}/pets/{{id}}"}}
        api_key_required: true
""",
            "gw_path": "/b/pets/1",
            "nginx_path": "/pets/1",
            "headers": {"x-api-key": BENCH_KEY},
            "extra_config": _key_config(),
        },
    ]


# ---------------------------------------------------------------- gateway vs gateway

def _route(integration: str, backend: int, throttled: bool, keyed: bool) -> str:
    if integration == "mock":
        integ = "{type: mock, body: {id: 1, name: rex}}"
    else:
        integ = f'{{type: http_proxy, uri: "http://127.0.0.1:{backend}/pets/{{id}}"}}'
    r = f"""      - route: GET /pets/{{id}}
        integration: {integ}
"""
    if throttled:
        r += f"        throttle: {OUT_OF_REACH}\n"
    if keyed:
        r += "        api_key_required: true\n"
    return r


def configs(backend: int, integration: str, workers: int, redis_url: str | None) -> dict[str, str]:
    from loadtests import harness as h
    out = {}
    stage = f"        throttle: {OUT_OF_REACH}\n"
    out["unthrottled"] = h.gateway_yaml(_route(integration, backend, False, False), workers=workers,
                                        extra_config="throttle: {enabled: false}\n")
    out["local"] = h.gateway_yaml(_route(integration, backend, True, False), workers=workers,
                                  stage_extra=stage)
    out["local_key"] = h.gateway_yaml(_route(integration, backend, True, True), workers=workers,
                                      stage_extra=stage, extra_config=_key_config())
    if redis_url:
        out["redis"] = h.gateway_yaml(
            _route(integration, backend, True, False), workers=workers, stage_extra=stage,
            extra_config=f'state: {{backend: redis, url: "{redis_url}", on_failure: closed}}\n')
    return out


def _start_redis(tmp: str):
    from loadtests import harness as h
    binary = h.require("redis-server", "redis-server")
    port = h.free_port()
    p = h.Proc([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", tmp], f"{tmp}/redis.log")
    h.wait_port(port)
    return p, f"redis://127.0.0.1:{port}/0"


def main(argv=None) -> int:
    from loadtests import harness as h
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--integration", choices=("http_proxy", "mock"), default="http_proxy")
    ap.add_argument("--no-redis", action="store_true")
    ap.add_argument("--print-configs", action="store_true", help="print the configs and exit")
    args = ap.parse_args(argv)
    h.raise_nofile()
    tmp = tempfile.mkdtemp(prefix="gwbench-throttle-")
    procs = []
    try:
        backend_proc, backend = h.start_backend(tmp) if not args.print_configs else (None, 9)
        if backend_proc:
            procs.append(backend_proc)
        redis_url = None
        if not args.no_redis and not args.print_configs:
            rp, redis_url = _start_redis(tmp)
            procs.append(rp)
        elif not args.no_redis:
            redis_url = "redis://127.0.0.1:6379/0"
        cfgs = configs(backend, args.integration, args.workers, redis_url)
        if args.print_configs:
            for name, text in cfgs.items():
                print(f"# --- {name}\n{text}")
            return 0
        gws = {}
        for name, text in cfgs.items():
            path = Path(tmp, f"{name}.yaml")
            path.write_text(text)
            p, port, _ = h.start_gateway(path, Path(tmp, f"{name}.log"), workers=args.workers)
            procs.append(p)
            gws[name] = port
        headers = {"local_key": {"x-api-key": BENCH_KEY}}
        for name, port in gws.items():           # warm up (and check every config answers 200)
            r = h.run_wrk(f"http://127.0.0.1:{port}/b/pets/1", 2, args.connections, args.threads,
                          headers=headers.get(name))
            if r["non2xx"]:
                raise SystemExit(f"{name}: {r['non2xx']} non-2xx answers in the warm-up")
        rps: dict[str, list[float]] = {n: [] for n in gws}
        for rnd in range(args.rounds):
            order = list(gws) if rnd % 2 == 0 else list(reversed(gws))
            for name in order:
                r = h.run_wrk(f"http://127.0.0.1:{gws[name]}/b/pets/1", args.duration,
                              args.connections, args.threads, headers=headers.get(name))
                rps[name].append(r["rps"])
                print(f"round {rnd + 1} {name:12} {r['rps']:10.0f} req/s  non2xx={r['non2xx']}",
                      flush=True)
        med = {n: statistics.median(v) for n, v in rps.items()}
        result = {"machine": h.cpu_model(), "workers": args.workers,
                  "integration": args.integration, "duration": args.duration,
                  "rounds": args.rounds, "rps": med,
                  "local_vs_unthrottled": med["local"] / med["unthrottled"],
                  "local_key_vs_unthrottled": med["local_key"] / med["unthrottled"]}
        if "redis" in med:
            result["redis_vs_local"] = med["redis"] / med["local"]
        print(json.dumps(result, indent=2))
        ok = result["local_vs_unthrottled"] >= 0.95 and result.get("redis_vs_local", 1.0) >= 0.5
        print("targets (local >= 0.95x unthrottled, redis >= 0.5x local):", "met" if ok else "NOT met")
        return 0 if ok else 1
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
