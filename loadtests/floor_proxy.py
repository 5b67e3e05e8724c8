#!/usr/bin/env python3
"""How fast can any proxy written on uvloop in Python be? The floor, measured.

    python loadtests/floor_proxy.py [--rounds 3] [--duration 5] [--connections 64]

Runs, in alternating rounds against the same nginx backend, with wrk on the same path:
nginx as the reverse proxy (one worker), gwproxy's plain http_proxy route (one worker), and
a *floor* proxy: one uvloop process whose protocol does nothing but pass bytes through
(each client connection paired with its own keep-alive backend connection; no parsing, no
header rewriting, no routing; two Python callbacks and two writes per request). The floor
is what the event loop and the kernel cost a Python proxy before it does any gateway
work; it is not a usable proxy (it cannot route, retry or even frame a response).

For each it reports req/s and the proxy process's CPU per request (user and kernel, from
/proc over the measured window), so the table says how much of gwproxy's cost is its own
work and how much the uvloop floor under it.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests import harness as h  # noqa: E402


class _Side(asyncio.Protocol):
    """What both sides share: no flow control, close on EOF (it is a floor, not a proxy)."""

    transport = None

    def eof_received(self):
        return False


class _Back(_Side):
    """The backend side of one client connection."""

    def __init__(self, front):
        self.front = front
        self.transport = None
        self.pending = []

    def connection_made(self, transport):
        self.transport = transport
        for data in self.pending:
            transport.write(data)
        self.pending = []

    def data_received(self, data):
        self.front.transport.write(data)

    def connection_lost(self, exc):
        self.front.transport.close()


class _Front(_Side):
    """One client connection: bytes go to the paired backend connection, verbatim."""

    def __init__(self, backend_port):
        self.port = backend_port
        self.back = None
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.back = _Back(self)
        loop = asyncio.get_running_loop()
        loop.create_task(loop.create_connection(lambda: self.back, "127.0.0.1", self.port))

    def data_received(self, data):
        t = self.back.transport
        if t is None:
            self.back.pending.append(data)
        else:
            t.write(data)

    def connection_lost(self, exc):
        if self.back.transport is not None:
            self.back.transport.close()


def serve(port: int, backend_port: int) -> None:
    import uvloop

    async def main():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Front(backend_port), "127.0.0.1", port,
                                          backlog=2048)
        await server.serve_forever()
    uvloop.run(main())


def _cpu(pid: int) -> tuple[float, float]:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(f[11]) / tck, int(f[12]) / tck


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def measure(pids: list[int], url: str, duration: int, connections: int) -> dict:
    before = [_cpu(p) for p in pids]
    r = h.run_wrk(url, duration, connections, 1, None)
    after = [_cpu(p) for p in pids]
    n = max(r["rps"] * duration, 1.0)
    return {"rps": r["rps"],
            "user": sum(b[0] - a[0] for a, b in zip(before, after)) / n * 1e6,
            "sys": sum(b[1] - a[1] for a, b in zip(before, after)) / n * 1e6}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--serve", nargs=2, type=int, metavar=("PORT", "BACKEND_PORT"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.serve:
        serve(*a.serve)
        return 0
    h.require("wrk")
    tmp = tempfile.mkdtemp(prefix="gwfloor-")
    procs = []
    try:
        backend, bport = h.start_backend(tmp)
        procs.append(backend)
        nginx, nport = h.start_nginx_proxy(tmp, bport, 1)
        procs.append(nginx)
        routes = (f'      - route: GET /pets/{{id}}\n        integration: {{type: http_proxy, '
                  f'uri: "http://127.0.0.1:{bport}/pets/{{id}}"}}\n')
        cfg = Path(tmp, "gw.yaml")
        cfg.write_text(h.gateway_yaml(routes))
        gw, gport, _ = h.start_gateway(cfg, Path(tmp, "gw.log"))
        procs.append(gw)
        fport = h.free_port()
        floor = h.Proc([sys.executable, __file__, "--serve", str(fport), str(bport)],
                       f"{tmp}/floor.log")
        procs.append(floor)
        h.wait_port(fport)
        time.sleep(1.0)
        who = {
            "nginx proxy": (_children(nginx.p.pid), f"http://127.0.0.1:{nport}/pets/1"),
            "gwproxy http_proxy": (_children(gw.p.pid) or [gw.p.pid],
                                   f"http://127.0.0.1:{gport}/b/pets/1"),
            "uvloop floor": ([floor.p.pid], f"http://127.0.0.1:{fport}/pets/1"),
        }
        for _, url in who.values():
            h.run_wrk(url, 1, a.connections, 1, None)     # warm: connections, caches
        res: dict = {k: [] for k in who}
        for rnd in range(a.rounds):
            for name, (pids, url) in who.items():
                m = measure(pids, url, a.duration, a.connections)
                res[name].append(m)
                print(f"[round {rnd + 1}] {name}: {m['rps']:.0f} req/s, "
                      f"user {m['user']:.2f} us, kernel {m['sys']:.2f} us per request",
                      flush=True)
        ref = statistics.median(m["rps"] for m in res["nginx proxy"])
        print(f"\n{time.strftime('%Y-%m-%d')} on {h.cpu_model()}; wrk {a.connections} connections, "
              f"{a.duration:g} s x {a.rounds} alternating rounds (median), one worker each\n")
        print("| proxy | req/s | vs nginx | user µs/req | kernel µs/req |")
        print("|---|---:|---:|---:|---:|")
        for name, ms in res.items():
            rps = statistics.median(m["rps"] for m in ms)
            print(f"| {name} | {rps:.0f} | {rps / ref:.2f}x | "
                  f"{statistics.median(m['user'] for m in ms):.2f} | "
                  f"{statistics.median(m['sys'] for m in ms):.2f} |")
    finally:
        for p in reversed(procs):
            p.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
