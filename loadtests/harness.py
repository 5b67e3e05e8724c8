"""Shared plumbing for the load tests: free ports, processes, an nginx backend, nginx as a
proxy, the gateway, wrk, and memory of a process tree.

Everything listens on 127.0.0.1. The backend is always nginx (one worker), so the thing
being measured is the proxy in the middle, never the backend.
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "loadtests" / "results"

#: body of the backend's default answer (same as compare.py)
BACKEND_BODY = '{"id": 1, "name": "rex"}'
#: payload sizes the backend serves as /payload/<size> (static files, Content-Length framed)
PAYLOAD_SIZES = (0, 1024, 100 * 1024)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"port {port} did not open within {timeout:.0f} s")


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's open-file limit as far as allowed; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def _preexec_nofile():  # runs in the child between fork and exec
    raise_nofile(65536)


def nginx_bin() -> str:
    b = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(b):
        raise SystemExit("nginx is required (apt-get install -y nginx)")
    return b


def require(tool: str, pkg: str | None = None) -> str:
    b = shutil.which(tool)
    if not b:
        raise SystemExit(f"{tool} is required (apt-get install -y {pkg or tool})")
    return b


class Proc:
    """A child process in its own session (so the whole tree can be signalled)."""

    def __init__(self, cmd, log, env=None, cwd=None, nofile: bool = True):
        self.cmd = cmd
        self.log_path = str(log)
        self.log = open(log, "wb")
        self.p = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                  start_new_session=True,
                                  preexec_fn=_preexec_nofile if nofile else None)

    @property
    def pid(self) -> int:
        return self.p.pid

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self) -> None:
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait()
            except ProcessLookupError:
                pass
        self.log.close()

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


# -- nginx ------------------------------------------------------------------------------------

NGINX_BACKEND = """
worker_processes 1;
daemon off;
pid {dir}/backend.pid;
error_log {dir}/backend-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  sendfile on;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location /payload/ {{ alias {dir}/payload/; default_type application/octet-stream; etag off; }}
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}
}}
"""

NGINX_PROXY = """
worker_processes {workers};
daemon off;
pid {dir}/proxy.pid;
error_log {dir}/proxy-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
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

#: nginx answering by itself (the "fixed response" baseline for granian's boundary)
NGINX_FIXED = """
worker_processes {workers};
daemon off;
pid {dir}/fixed.pid;
error_log {dir}/fixed-error.log warn;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{ default_type application/json; return 200 '{body}'; }}
  }}
}}
"""


def start_backend(tmp: str, port: int | None = None) -> tuple[Proc, int]:
    """nginx backend: ``/payload/<bytes>`` static files, anything else a small JSON body."""
    port = port or free_port()
    pay = Path(tmp, "payload")
    pay.mkdir(parents=True, exist_ok=True)
    # nginx's workers drop to an unprivileged user when started as root: let them read
    os.chmod(tmp, 0o755)
    os.chmod(pay, 0o755)
    for n in PAYLOAD_SIZES:
        Path(pay, str(n)).write_bytes(b"x" * n)
        os.chmod(Path(pay, str(n)), 0o644)
    Path(tmp, "backend.conf").write_text(NGINX_BACKEND.format(dir=tmp, port=port, body=BACKEND_BODY))
    p = Proc([nginx_bin(), "-c", f"{tmp}/backend.conf", "-p", tmp], f"{tmp}/backend.log")
    wait_port(port)
    return p, port


def start_nginx_proxy(tmp: str, backend: int, workers: int = 1, port: int | None = None) -> tuple[Proc, int]:
    port = port or free_port()
    Path(tmp, "proxy.conf").write_text(NGINX_PROXY.format(dir=tmp, port=port, backend=backend, workers=workers))
    p = Proc([nginx_bin(), "-c", f"{tmp}/proxy.conf", "-p", tmp], f"{tmp}/proxy.log")
    wait_port(port)
    return p, port


def start_nginx_fixed(tmp: str, workers: int = 1, port: int | None = None) -> tuple[Proc, int]:
    port = port or free_port()
    Path(tmp, "fixed.conf").write_text(NGINX_FIXED.format(dir=tmp, port=port, workers=workers, body=BACKEND_BODY))
    p = Proc([nginx_bin(), "-c", f"{tmp}/fixed.conf", "-p", tmp], f"{tmp}/fixed.log")
    wait_port(port)
    return p, port


# -- the gateway ------------------------------------------------------------------------------

#: the account-level throttle (default 10,000 req/s, burst 5,000, like AWS) would cap every
#: benchmark: raise it out of reach but keep it on, so its per-request cost is measured
ACCOUNT_THROTTLE = "throttle: {rate: 1000000000, burst: 1000000000}\n"


def gateway_yaml(routes: str, *, workers: int = 1, extra_config: str = "", stage_extra: str = "",
                 api: str = "bench", stage: str = "b") -> str:
    """A REST API ``api`` with one stage ``stage``; ``routes`` is the indented routes list.
    The account throttle is raised out of reach unless ``extra_config`` sets its own."""
    account = "" if re.search(r"^throttle:", extra_config or "", re.M) else ACCOUNT_THROTTLE
    return f"""server:
  workers: {workers}
  access_log: false
{account}{extra_config}
apis:
  {api}:
    type: rest
    stages:
      {stage}:
        variables: {{}}
{stage_extra}
    routes:
{routes}"""


def start_gateway(cfg_path: str | Path, log: str | Path, workers: int = 1, port: int | None = None,
                  timeout: float = 120.0, env_extra: dict | None = None) -> tuple[Proc, int, float]:
    """Start ``gwproxy serve``; returns (proc, port, seconds until the port accepted)."""
    port = port or free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env_extra or {}))
    t0 = time.monotonic()
    p = Proc([sys.executable, "-m", "proxy.cli", "serve", "-c", str(cfg_path), "--listen",
              f"127.0.0.1:{port}", "--workers", str(workers), "--log-level", "warning"],
             log, env=env, cwd=str(ROOT))
    try:
        deadline = time.monotonic() + timeout
        while True:
            if not p.alive():   # a config error: say why now instead of waiting out the timeout
                raise TimeoutError
            try:
                wait_port(port, 0.5)
                break
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise
    except TimeoutError:
        p.stop()
        raise RuntimeError(f"gateway did not start; log:\n{p.tail()}")
    return p, port, time.monotonic() - t0


def tree_memory(pid: int) -> dict:
    """RSS and PSS (MB) of a process and all its descendants (granian master + workers).

    RSS counts shared pages once per process; PSS shares them out, so PSS is the fair sum.
    ``worker_rss_mb`` is the largest single process (the worker holding the connections).
    """
    import psutil
    try:
        root = psutil.Process(pid)
        procs = [root] + root.children(recursive=True)
    except psutil.NoSuchProcess:
        return {"rss_mb": None, "pss_mb": None, "worker_rss_mb": None, "processes": 0}
    rss = pss = 0
    top = 0
    n = 0
    for p in procs:
        try:
            mi = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        n += 1
        rss += mi.rss
        pss += getattr(mi, "pss", mi.rss)
        top = max(top, mi.rss)
    mb = 1024 * 1024
    return {"rss_mb": round(rss / mb, 1), "pss_mb": round(pss / mb, 1),
            "worker_rss_mb": round(top / mb, 1), "processes": n}


# -- wrk --------------------------------------------------------------------------------------

WRK_LAT = re.compile(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, duration: float, connections: int = 64, threads: int = 1,
            headers: dict | None = None, script: str | None = None) -> dict:
    """Closed-loop saturation run; returns rps, p50/p99 (ms), non-2xx count, raw output."""
    cmd = [require("wrk"), f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    if script:
        cmd += ["-s", script]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 60).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not m:
        raise RuntimeError(f"wrk gave no result:\n{out}")
    lat = {p: float(v) * _UNIT[u] for p, v, u in WRK_LAT.findall(out)}
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    tr = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", out)
    mbps = float(tr.group(1)) * {"B": 1 / 1e6, "KB": 1 / 1024, "MB": 1.0, "GB": 1024.0}[tr.group(2)] if tr else None
    return {"rps": float(m.group(1)), "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
            "non2xx": int(non2xx.group(1)) if non2xx else 0, "mb_per_s": mbps,
            "socket_errors": errors.group(0) if errors else "", "raw": out}


def write_wrk_paths_script(path: str | Path, requests: list[tuple[str, dict]]) -> str:
    """A wrk Lua script that cycles through (path, headers) pairs, one per request."""
    def lua_str(s: str) -> str:
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    specs = []
    for p, h in requests:
        hs = ", ".join(f"[{lua_str(k)}] = {lua_str(v)}" for k, v in h.items())
        specs.append(f"  {{{lua_str(p)}, {{{hs}}}}},")
    # formatted in init() (per thread), once wrk has set the Host header
    Path(path).write_text(
        "local specs = {\n" + "\n".join(specs) + "\n}\n"
        "local reqs = {}\n"
        "local i = 0\n"
        "init = function(args)\n"
        "  for k, s in ipairs(specs) do reqs[k] = wrk.format(\"GET\", s[1], s[2]) end\n"
        "end\n"
        "request = function()\n  i = i % #reqs + 1\n  return reqs[i]\nend\n")
    return str(path)


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip() + f" ({os.cpu_count()} cores)"
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"
