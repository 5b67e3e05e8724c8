#!/usr/bin/env python3
"""Is granian's boundary the limit? A trivial RSGI app (fixed response, no work) under
granian with the gateway's settings (RSGI, uvloop, 1 worker, backlog 2048) vs nginx
returning the same fixed response, same wrk settings, alternating rounds.

    python loadtests/granian_boundary.py [--rounds 3] [--duration 10] [--connections 64]
        [--idle 10000]    # also: RSS of the trivial app holding N idle keep-alive connections

If the trivial app's req/s is well below nginx's, no amount of work in proxy/ reaches
1.0x nginx for a proxied request on this server: the gap is granian's (Rust <-> Python
crossing per request, a coroutine per request, response object marshalling).
"""
from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests import harness as h  # noqa: E402

GRANIAN = """
import sys
from granian.constants import Interfaces, Loops
from granian.server import Server
sys.path.insert(0, {root!r})
kw = {kw}
Server("loadtests.trivial_rsgi:app", address="127.0.0.1", port={port}, interface=Interfaces.RSGI,
       workers=1, loop=Loops.uvloop, log_level="warning", backlog=2048, websockets=False, **kw).serve()
"""


def start_trivial(tmp: str, kw: dict | None = None):
    port = h.free_port()
    Path(tmp, "trivial.py").write_text(GRANIAN.format(root=str(ROOT), port=port, kw=repr(kw or {})))
    p = h.Proc([sys.executable, f"{tmp}/trivial.py"], f"{tmp}/trivial.log", cwd=str(ROOT))
    h.wait_port(port)
    return p, port


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--idle", type=int, default=0, help="also measure RSS with this many idle connections")
    a = ap.parse_args(argv)
    h.raise_nofile()
    tmp = tempfile.mkdtemp(prefix="gwgranian-")
    rows = {"granian trivial RSGI": [], "nginx return 200": []}
    for r in range(a.rounds):
        n, nport = h.start_nginx_fixed(tmp)
        try:
            h.run_wrk(f"http://127.0.0.1:{nport}/", min(2, a.duration), a.connections)
            rows["nginx return 200"].append(h.run_wrk(f"http://127.0.0.1:{nport}/", a.duration, a.connections))
        finally:
            n.stop()
        g, gport = start_trivial(tmp)
        try:
            h.run_wrk(f"http://127.0.0.1:{gport}/", min(2, a.duration), a.connections)
            rows["granian trivial RSGI"].append(h.run_wrk(f"http://127.0.0.1:{gport}/", a.duration, a.connections))
        finally:
            g.stop()
        print(f"[round {r + 1}] granian {rows['granian trivial RSGI'][-1]['rps']:.0f} req/s, "
              f"nginx {rows['nginx return 200'][-1]['rps']:.0f} req/s", flush=True)
    print(f"\n| server (fixed response) | req/s | p50 / p99 ms |\n|---|---:|---:|")
    med = {}
    for who, rs in rows.items():
        med[who] = statistics.median(x["rps"] for x in rs)
        print(f"| {who} | {med[who]:.0f} | {statistics.median(x['p50_ms'] for x in rs):.2f} / "
              f"{statistics.median(x['p99_ms'] for x in rs):.2f} |")
    print(f"granian/nginx: {med['granian trivial RSGI'] / med['nginx return 200']:.2f}x")
    if a.idle:
        from loadtests.scaling import _idle_one
        g, gport = start_trivial(tmp, {"backpressure": a.idle + 1024})
        try:
            res = asyncio.run(_idle_one(gport, "/", a.idle, g.pid, 1.0))
        finally:
            g.stop()
        print(f"trivial granian app with {a.idle} idle connections: {res['still_open']} held, RSS "
              f"{res['rss_before_mb']} -> {res['rss_mb']} MB ({res['kb_per_conn']} KB/conn)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
