#!/usr/bin/env python3
"""Side-by-side benchmark: gwproxy vs nginx proxying the same nginx backend, same run.

    python loadtests/compare.py [--rounds 3] [--duration 10] [--connections 64]
                                [--scenarios plain,...] [--json out.json] [--readme]

For each scenario, alternating rounds: nginx-as-proxy, then gwproxy, each driven by wrk
(Debian package) with the same connections and duration. Prints requests/s and p50/p99
for each (median over rounds) and the gwproxy/nginx ratio. ``--readme`` rewrites the
table between the BENCH markers in README.md.

Everything listens on 127.0.0.1; every run is bounded by --duration.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open")


NGINX_BACKEND = """
worker_processes 1;
daemon off;
pid {dir}/backend.pid;
error_log {dir}/backend-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}
}}
"""

NGINX_PROXY = """
worker_processes {workers};
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
"""


@dataclass
class Scenario:
    name: str
    gw_routes: str            # YAML for the routes list of api "bench" (REST, stage "b")
    gw_path: str              # path requested on the gateway
    nginx_path: str | None    # path requested on nginx-as-proxy (None: nginx can't express it)
    extra_config: str = ""    # extra top-level YAML (functions, usage plans, ...)
    headers: dict = field(default_factory=dict)
    stage_extra: str = ""


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
    return out


def gw_config(sc: Scenario, workers: int) -> str:
    return f"""server:
  workers: {workers}
  access_log: false
{sc.extra_config}
apis:
  bench:
    type: rest
    stages:
      b:
        variables: {{}}
{sc.stage_extra}
    routes:
{sc.gw_routes}"""


WRK_LAT = re.compile(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)


def run_wrk(url: str, duration: int, connections: int, threads: int, headers: dict) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 30).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for p, v, unit in WRK_LAT.findall(out):
        lat[p] = float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(0) if errors else ""}


class Proc:
    def __init__(self, cmd, log, env=None, cwd=None):
        self.log = open(log, "wb")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  start_new_session=True)

    def stop(self):
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
        self.log.close()


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1, help="gwproxy workers and nginx worker_processes")
    ap.add_argument("--scenarios", default="plain")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--readme", action="store_true", help="rewrite README.md's benchmark table")
    args = ap.parse_args(argv)
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            print(f"{tool} is required (apt-get install -y {tool})", file=sys.stderr)
            return 2
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    tmp = tempfile.mkdtemp(prefix="gwbench-")
    backend = free_port()
    Path(tmp, "backend.conf").write_text(NGINX_BACKEND.format(dir=tmp, port=backend,
                                                              body='{"id": 1, "name": "rex"}'))
    procs = [Proc([nginx, "-c", f"{tmp}/backend.conf", "-p", tmp], f"{tmp}/backend.log")]
    wait_port(backend)
    all_sc = scenarios(backend)
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if chosen == ["all"]:
        chosen = list(all_sc)
    results = {}
    try:
        nport = free_port()
        Path(tmp, "proxy.conf").write_text(NGINX_PROXY.format(dir=tmp, port=nport, backend=backend,
                                                              workers=args.workers))
        for key in chosen:
            sc = all_sc[key]
            cfg = Path(tmp, f"gw-{key}.yaml")
            cfg.write_text(gw_config(sc, args.workers))
            gport = free_port()
            rows = {"nginx": [], "gwproxy": []}
            for r in range(args.rounds):
                if sc.nginx_path is not None:
                    np = Proc([nginx, "-c", f"{tmp}/proxy.conf", "-p", tmp], f"{tmp}/proxy.log")
                    wait_port(nport)
                    run_wrk(f"http://127.0.0.1:{nport}{sc.nginx_path}", 2, args.connections, args.threads, {})
                    rows["nginx"].append(run_wrk(f"http://127.0.0.1:{nport}{sc.nginx_path}", args.duration,
                                                 args.connections, args.threads, {}))
                    np.stop()
                env = dict(os.environ, PYTHONPATH=str(ROOT))
                gp = Proc([sys.executable, "-m", "proxy.cli", "serve", "-c", str(cfg), "--listen",
                           f"127.0.0.1:{gport}", "--log-level", "warning"], f"{tmp}/gw-{key}.log", env=env, cwd=str(ROOT))
                wait_port(gport)
                run_wrk(f"http://127.0.0.1:{gport}{sc.gw_path}", 2, args.connections, args.threads, sc.headers)
                rows["gwproxy"].append(run_wrk(f"http://127.0.0.1:{gport}{sc.gw_path}", args.duration,
                                               args.connections, args.threads, sc.headers))
                gp.stop()
                g = rows["gwproxy"][-1]
                n = rows["nginx"][-1] if rows["nginx"] else None
                print(f"[{key} round {r + 1}] gwproxy {g['rps']:.0f} rps" +
                      (f", nginx {n['rps']:.0f} rps" if n else "") +
                      (f" (gwproxy non-2xx: {g['non2xx']})" if g["non2xx"] else ""), flush=True)
            results[key] = summarize(sc, rows)
    finally:
        for p in procs:
            p.stop()
    meta = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu_model(), "rounds": args.rounds,
            "duration_s": args.duration, "connections": args.connections, "workers": args.workers}
    table = render(results, meta)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    if args.readme:
        write_readme(table)
    return 0


def _med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(sc: Scenario, rows: dict) -> dict:
    out = {"name": sc.name}
    for who in ("gwproxy", "nginx"):
        if rows[who]:
            out[who] = {"rps": _med(rows[who], "rps"), "p50_ms": _med(rows[who], "p50_ms"),
                        "p99_ms": _med(rows[who], "p99_ms"), "rounds": [r["rps"] for r in rows[who]],
                        "non2xx": sum(r["non2xx"] for r in rows[who])}
    if "nginx" in out:
        out["ratio"] = out["gwproxy"]["rps"] / out["nginx"]["rps"]
    return out


def render(results: dict, meta: dict) -> str:
    lines = [f"Measured {meta['date']} on {meta['cpu']}; wrk {meta['connections']} connections, "
             f"{meta['duration_s']} s x {meta['rounds']} alternating rounds (median), "
             f"{meta['workers']} worker(s) each.", "",
             "| scenario | gwproxy req/s | gwproxy p50 / p99 ms | nginx req/s | nginx p50 / p99 ms | ratio |",
             "|---|---:|---:|---:|---:|---:|"]
    for key, r in results.items():
        g = r["gwproxy"]
        n = r.get("nginx")
        lines.append(
            f"| {r['name']} | {g['rps']:.0f} | {g['p50_ms']:.2f} / {g['p99_ms']:.2f} | "
            + (f"{n['rps']:.0f} | {n['p50_ms']:.2f} / {n['p99_ms']:.2f} | {r['ratio']:.2f}x |" if n else "- | - | - |"))
    return "\n".join(lines)


def write_readme(table: str) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- BENCH:START -->", "<!-- BENCH:END -->"
    if start in text and end in text:
        a = text.index(start) + len(start)
        b = text.index(end)
        text = text[:a] + "\n" + table + "\n" + text[b:]
        readme.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
