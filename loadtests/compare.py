#!/usr/bin/env python3
"""Side-by-side benchmark: gwproxy vs nginx proxying the same nginx backend, same run.

    python loadtests/compare.py [--rounds 3] [--duration 10] [--connections 64]
                                [--scenarios plain,...|all] [--fixed-rate auto|N|0]
                                [--json out.json] [--readme] [--list]

For each scenario, alternating rounds: nginx-as-proxy, then gwproxy, each driven by wrk
(Debian package) with the same connections and duration (closed loop: requests/s at
saturation, with wrk's p50/p99). Then, unless ``--fixed-rate 0``, the same alternation
with an open-loop client (loadtests/fixed_rate.py) offering the *same* request rate to
both, so that p99 is compared at the same load: ``auto`` (the default) offers half of
gwproxy's median saturation rate for that scenario, capped at what the Python client can
schedule on time (``--fixed-rate-cap`` per ``--client-procs``); rounds where the schedule
was not met are flagged "(saturated)" in the table. Medians over rounds; the ratio is
gwproxy/nginx. ``--readme`` rewrites the table between the BENCH markers in README.md
(``--readme-block BENCH-CORES`` the one for a worker per core).

Scenarios: ``plain`` here; feature modules add theirs (loadtests/bench_*.py, each a
``scenarios(backend, root)`` returning dicts); ``mix`` combines them (one API per
component, weighted rotation, see MIX_WEIGHTS) and has no nginx equivalent. ``all`` runs
every scenario. ``--list`` prints them.

Everything listens on 127.0.0.1; every run is bounded by --duration.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests import harness as h  # noqa: E402
from loadtests.harness import (  # noqa: E402,F401  (re-exported for older imports)
    NGINX_BACKEND, NGINX_PROXY, Proc, cpu_model, free_port, wait_port,
)


@dataclass
class Scenario:
    name: str
    gw_routes: str            # YAML for the routes list of api "bench" (REST, stage "b")
    gw_path: str              # path requested on the gateway
    nginx_path: str | None    # path requested on nginx-as-proxy (None: nginx can't express it)
    extra_config: str = ""    # extra top-level YAML (functions, usage plans, ...)
    headers: dict = field(default_factory=dict)
    stage_extra: str = ""
    config: str | None = None      # a whole gateway config (overrides the fields above)
    rotation: list | None = None   # [(gw_path, headers), ...] cycled per request (the mix)


#: the "realistic mix": scenario key prefix -> weight (requests out of sum(weights)).
#: The first registered scenario whose key starts with the prefix is used; absent ones
#: (features not landed yet) are skipped.
MIX_WEIGHTS = (
    ("plain", 4),
    ("cache_hit", 3),
    ("function_inline", 2),
    ("function_process", 1),
    ("throttle", 2),
    ("apikey", 2),
)
# (vpc_link scenarios are left out of the mix: their private link claims the backend's
# address, which the other components reach directly)


def scenarios(backend: int) -> dict[str, Scenario]:
    up = f"http://127.0.0.1:{backend}"
    out = {
        "plain": Scenario(
            "plain http_proxy",
            f"""      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, uri: "{up}/pets/{{id}}"}}
""", "/b/pets/1", "/pets/1"),
    }
    # feature modules contribute scenarios here as they land (see loadtests/bench_*.py)
    for mod in ("bench_functions", "bench_cache", "bench_throttle", "bench_vpc"):
        try:
            m = __import__(f"loadtests.{mod}", fromlist=["scenarios"])
        except ImportError:
            continue
        for s in m.scenarios(backend, ROOT):
            out[s["key"]] = Scenario(**{k: v for k, v in s.items() if k != "key"})
    mix = mix_scenario(out)
    if mix is not None:
        out["mix"] = mix
    return out


def _frag(text: str):
    import yaml
    text = textwrap.dedent(text or "").strip()
    return yaml.safe_load(text) if text else None


def _merge(into: dict, extra: dict, where: str = "") -> bool:
    """Deep-merge ``extra`` into ``into``; False (and nothing changed) on a conflict."""
    import copy
    trial = copy.deepcopy(into)

    def go(a, b):
        for k, v in b.items():
            if k in a:
                if isinstance(a[k], dict) and isinstance(v, dict):
                    if not go(a[k], v):
                        return False
                elif a[k] != v:
                    return False
            else:
                a[k] = copy.deepcopy(v)
        return True
    if not go(trial, extra):
        return False
    into.clear()
    into.update(trial)
    return True


def mix_scenario(all_sc: dict[str, Scenario], weights=MIX_WEIGHTS) -> Scenario | None:
    """One API per component scenario (base path /m<i>, its own stage settings), so stage
    features (a cache on the stage) apply only to their own share of the traffic."""
    import yaml
    parts = []
    used = set()
    for prefix, w in weights:
        key = next((k for k in all_sc if k.startswith(prefix) and k not in used and k != "mix"), None)
        if key is None or all_sc[key].config is not None:
            continue
        used.add(key)
        parts.append((key, w, all_sc[key]))
    if len(parts) < 2:
        return None
    cfg: dict = {"server": {"workers": 1, "access_log": False}}
    if not any(_frag(sc.extra_config) and "throttle" in _frag(sc.extra_config) for _, _, sc in parts):
        cfg["throttle"] = {"rate": 1_000_000_000, "burst": 1_000_000_000}
    apis: dict = {}
    rotation: list = []
    names = []
    for i, (key, w, sc) in enumerate(parts):
        extra = _frag(sc.extra_config) or {}
        # usage plans name their stages as "bench/<stage>": here the API is m<i>
        for plan in (extra.get("usage_plans") or {}).values():
            if isinstance(plan, dict) and plan.get("stages"):
                plan["stages"] = [f"m{i}/" + st.split("/", 1)[1] if st.startswith("bench/") else st
                                  for st in plan["stages"]]
        if not _merge(cfg, extra):
            print(f"mix: leaving out {key} (its top-level config conflicts with the others)", file=sys.stderr)
            continue
        stage = _frag(sc.stage_extra) or {}
        stage.setdefault("variables", {})
        apis[f"m{i}"] = {"type": "rest", "base_path": f"/m{i}", "stages": {"b": stage},
                         "routes": _frag(sc.gw_routes)}
        rotation += [(f"/m{i}{sc.gw_path}", dict(sc.headers))] * w
        names.append(f"{key}:{w}")
    cfg["apis"] = apis
    # interleave so that consecutive requests hit different components
    inter = []
    buckets = {}
    for p in rotation:
        buckets.setdefault(p[0], []).append(p)
    while any(buckets.values()):
        for k in list(buckets):
            if buckets[k]:
                inter.append(buckets[k].pop())
    return Scenario("mix (" + ", ".join(names) + ")", "", inter[0][0], None,
                    config=yaml.safe_dump(cfg, sort_keys=False), rotation=inter)


def gw_config(sc: Scenario, workers: int) -> str:
    if sc.config is not None:
        import yaml
        cfg = yaml.safe_load(sc.config)
        cfg.setdefault("server", {})["workers"] = workers
        return yaml.safe_dump(cfg, sort_keys=False)
    return h.gateway_yaml(sc.gw_routes, workers=workers, extra_config=sc.extra_config,
                          stage_extra=sc.stage_extra)


def run_wrk(url: str, duration: int, connections: int, threads: int, headers: dict,
            script: str | None = None) -> dict:
    r = h.run_wrk(url, duration, connections, threads, headers, script)
    r.pop("raw", None)
    return r


def _fixed(url, rate, args, headers=None, rotation=None):
    from loadtests.fixed_rate import measure
    return measure(url, rate, args.duration, 2.0, args.connections, headers, args.client_procs, rotation)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="gwproxy workers and nginx worker_processes")
    ap.add_argument("--scenarios", default="plain", help="comma-separated keys, or 'all'")
    ap.add_argument("--fixed-rate", default="auto",
                    help="offered req/s for the latency-at-fixed-rate rounds: a number, 'auto' "
                         "(half of gwproxy's saturation rate per scenario, at most --fixed-rate-cap) or 0 to skip")
    ap.add_argument("--client-procs", type=int, default=1, help="processes for the fixed-rate client")
    ap.add_argument("--fixed-rate-cap", type=float, default=4000,
                    help="'auto' offers at most this many req/s per client process (one Python "
                         "client process keeps its schedule up to ~6-7k req/s on this machine)")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's benchmark table")
    ap.add_argument("--readme-block", default="BENCH",
                    help="which table: the one between <!-- NAME:START --> and <!-- NAME:END --> "
                         "(README has BENCH for one worker each, BENCH-CORES for one per core)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = ap.parse_args(argv)
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            print(f"{tool} is required (apt-get install -y {tool})", file=sys.stderr)
            return 2
    h.raise_nofile()
    tmp = tempfile.mkdtemp(prefix="gwbench-")
    backend_proc, backend = h.start_backend(tmp)
    procs = [backend_proc]
    all_sc = scenarios(backend)
    if args.list:
        for k, sc in all_sc.items():
            print(f"{k:24s} {sc.name}" + ("" if sc.nginx_path else "  (gwproxy only)"))
        backend_proc.stop()
        return 0
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if chosen == ["all"]:
        chosen = list(all_sc)
    unknown = [k for k in chosen if k not in all_sc]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(all_sc)}", file=sys.stderr)
        backend_proc.stop()
        return 2
    results = {}
    try:
        for key in chosen:
            sc = all_sc[key]
            cfg = Path(tmp, f"gw-{key}.yaml")
            cfg.write_text(gw_config(sc, args.workers))
            script = None
            if sc.rotation:
                script = h.write_wrk_paths_script(Path(tmp, f"{key}.lua"), sc.rotation)
            rows = {"nginx": [], "gwproxy": []}
            fixed = {"nginx": [], "gwproxy": []}

            def nginx_round(body):
                np_, nport = h.start_nginx_proxy(tmp, backend, args.workers)
                try:
                    return body(f"http://127.0.0.1:{nport}{sc.nginx_path}")
                finally:
                    np_.stop()

            def gw_round(body):
                gp, gport, _ = h.start_gateway(cfg, Path(tmp, f"gw-{key}.log"), args.workers)
                try:
                    return body(f"http://127.0.0.1:{gport}{sc.gw_path}", gport)
                finally:
                    gp.stop()

            # 1. saturation (closed loop, wrk)
            for r in range(args.rounds):
                if sc.nginx_path is not None:
                    def sat_n(url):
                        run_wrk(url, 2, args.connections, args.threads, {})
                        return run_wrk(url, args.duration, args.connections, args.threads, {})
                    rows["nginx"].append(nginx_round(sat_n))

                def sat_g(url, port):
                    base = f"http://127.0.0.1:{port}/"
                    u = base if script else url
                    run_wrk(u, 2, args.connections, args.threads, sc.headers, script)
                    return run_wrk(u, args.duration, args.connections, args.threads, sc.headers, script)
                rows["gwproxy"].append(gw_round(sat_g))
                g = rows["gwproxy"][-1]
                n = rows["nginx"][-1] if rows["nginx"] else None
                print(f"[{key} round {r + 1}] gwproxy {g['rps']:.0f} rps p99 {g['p99_ms']} ms" +
                      (f", nginx {n['rps']:.0f} rps p99 {n['p99_ms']} ms" if n else "") +
                      (f" (gwproxy non-2xx: {g['non2xx']})" if g["non2xx"] else ""), flush=True)
            # 2. latency at a fixed offered rate (open loop, the same rate for both)
            rate = 0.0
            if args.fixed_rate == "auto":
                rate = min(round(0.5 * statistics.median(x["rps"] for x in rows["gwproxy"]), -1),
                           args.fixed_rate_cap * args.client_procs)
            elif float(args.fixed_rate) > 0:
                rate = float(args.fixed_rate)
            if rate > 0:
                for r in range(args.rounds):
                    if sc.nginx_path is not None:
                        fixed["nginx"].append(nginx_round(lambda url: _fixed(url, rate, args)))

                    def fix_g(url, port):
                        return _fixed(url, rate, args, sc.headers, sc.rotation)
                    fixed["gwproxy"].append(gw_round(fix_g))
                    g = fixed["gwproxy"][-1]
                    n = fixed["nginx"][-1] if fixed["nginx"] else None
                    print(f"[{key} fixed {rate:.0f}/s round {r + 1}] gwproxy p50 {g['p50_ms']} p99 {g['p99_ms']} ms"
                          + (f", nginx p50 {n['p50_ms']} p99 {n['p99_ms']} ms" if n else "")
                          + (" [gwproxy saturated]" if g["saturated"] else "")
                          + (" [nginx saturated]" if n and n["saturated"] else ""), flush=True)
            results[key] = summarize(sc, rows, fixed, rate)
    finally:
        for p in procs:
            p.stop()
    meta = {"date": time.strftime("%Y-%m-%d"), "cpu": h.cpu_model(), "rounds": args.rounds,
            "duration_s": args.duration, "connections": args.connections, "workers": args.workers,
            "fixed_rate": args.fixed_rate}
    table = render(results, meta)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    if args.readme:
        write_readme(table, args.readme_block)
    return 0


def _med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(sc: Scenario, rows: dict, fixed: dict | None = None, rate: float = 0.0) -> dict:
    out = {"name": sc.name}
    for who in ("gwproxy", "nginx"):
        if rows[who]:
            out[who] = {"rps": _med(rows[who], "rps"), "p50_ms": _med(rows[who], "p50_ms"),
                        "p99_ms": _med(rows[who], "p99_ms"), "rounds": [r["rps"] for r in rows[who]],
                        "non2xx": sum(r["non2xx"] for r in rows[who])}
        if fixed and fixed.get(who):
            f = fixed[who]
            out.setdefault(who, {})["fixed"] = {
                "rate": rate, "p50_ms": _med(f, "p50_ms"), "p99_ms": _med(f, "p99_ms"),
                "p99.9_ms": _med(f, "p99.9_ms"), "saturated_rounds": sum(1 for x in f if x["saturated"]),
                "errors": sum(x["errors"] for x in f), "non2xx": sum(x["non2xx"] for x in f)}
    if "nginx" in out and out["nginx"].get("rps"):
        out["ratio"] = out["gwproxy"]["rps"] / out["nginx"]["rps"]
        gf, nf = out["gwproxy"].get("fixed"), out["nginx"].get("fixed")
        if gf and nf and nf["p99_ms"]:
            out["p99_ratio"] = gf["p99_ms"] / nf["p99_ms"]
    return out


def render(results: dict, meta: dict) -> str:
    fr = meta.get("fixed_rate", "0")
    lines = [f"Measured {meta['date']} on {meta['cpu']}; wrk {meta['connections']} connections, "
             f"{meta['duration_s']} s x {meta['rounds']} alternating rounds (median), "
             f"{meta['workers']} worker(s) each. req/s and the ratio are at saturation (wrk); "
             + ("p50/p99 are at a fixed offered rate, the same for both servers "
                + ("(half of gwproxy's saturation rate, capped)" if fr == "auto" else f"({fr} req/s)")
                + ", open loop (loadtests/fixed_rate.py)." if fr not in ("0", "0.0") else
                "p50/p99 are wrk's at saturation."),
             "",
             "| scenario | gwproxy req/s | nginx req/s | ratio | offered req/s | gwproxy p50 / p99 ms "
             "| nginx p50 / p99 ms | p99 ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def lat(side):
        if side is None:
            return "-", None
        f = side.get("fixed")
        if f and f.get("p99_ms") is not None:
            mark = " (saturated)" if f["saturated_rounds"] else ""
            return f"{f['p50_ms']:.2f} / {f['p99_ms']:.2f}{mark}", f["rate"]
        if side.get("p99_ms") is not None:
            return f"{side['p50_ms']:.2f} / {side['p99_ms']:.2f} (sat.)", None
        return "-", None

    for key, r in results.items():
        g = r["gwproxy"]
        n = r.get("nginx")
        gl, rate = lat(g)
        nl, _ = lat(n)
        nginx_cols = f"{n['rps']:.0f} | {r['ratio']:.2f}x" if n else "- | -"
        p99r = f"{r['p99_ratio']:.2f}x" if r.get("p99_ratio") else "-"
        lines.append(f"| {r['name']} | {g['rps']:.0f} | {nginx_cols} | {f'{rate:.0f}' if rate else '-'} | "
                     f"{gl} | {nl} | {p99r} |")
    return "\n".join(lines)


def write_readme(table: str, block: str = "BENCH") -> None:
    readme = ROOT / "README.md"
    start, end = f"<!-- {block}:START -->", f"<!-- {block}:END -->"
    if not readme.exists():
        print("README.md not found: table not written", file=sys.stderr)
        return
    text = readme.read_text()
    if start in text and end in text:
        a = text.index(start) + len(start)
        b = text.index(end)
        text = text[:a] + "\n" + table + "\n" + text[b:]
        readme.write_text(text)
        print("README.md benchmark table updated")
    else:
        print(f"README.md has no {start} ... {end} markers: table not written", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
