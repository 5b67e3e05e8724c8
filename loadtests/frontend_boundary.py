#!/usr/bin/env python3
"""Is the front end the limit? The same trivial app (fixed response, no work) under each
front end the gateway can run on, vs nginx returning the same fixed response; same wrk
settings, alternating rounds:

- granian (RSGI, uvloop, 1 worker, backlog 2048: the gateway's settings);
- gwproxy's native front end (gwcore/http1.py: uvloop + httptools, 1 process);
- nginx ``return 200``.

    python loadtests/frontend_boundary.py [--rounds 3] [--duration 10] [--connections 64]
        [--idle 10000]    # also: RSS of the trivial apps holding N idle keep-alive connections

A front end whose trivial app is well below nginx caps every gateway scenario at that
ratio, whatever proxy/ does: that is how granian's ceiling (~0.37x nginx on a 2-core
machine) was found and why the native front end exists.
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


NATIVE = """
import asyncio, sys, uvloop
sys.path.insert(0, {root!r})
import gwcore
FrontendServer = gwcore.load("http1").FrontendServer
from proxy.frontend.supervisor import _listen_socket
from loadtests.trivial_rsgi import BODY, HEADERS

class App:
    def serve_now(self, ex, peer):
        ex.response_bytes(200, HEADERS, BODY)   # answered at once (returns None)

loop = uvloop.new_event_loop()
asyncio.set_event_loop(loop)
srv = FrontendServer(App(), loop)
loop.run_until_complete(srv.start(_listen_socket("127.0.0.1", {port}, listen=True)))
loop.run_forever()
"""


def start_native(tmp: str):
    port = h.free_port()
    Path(tmp, "native.py").write_text(NATIVE.format(root=str(ROOT), port=port))
    p = h.Proc([sys.executable, f"{tmp}/native.py"], f"{tmp}/native.log", cwd=str(ROOT))
    h.wait_port(port)
    return p, port


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
    starters = {"nginx return 200": lambda: h.start_nginx_fixed(tmp),
                "granian trivial RSGI": lambda: start_trivial(tmp),
                "native front end, trivial app": lambda: start_native(tmp)}
    rows: dict[str, list] = {k: [] for k in starters}
    for r in range(a.rounds):
        for who, start in starters.items():
            proc, port = start()
            try:
                h.run_wrk(f"http://127.0.0.1:{port}/", min(2, a.duration), a.connections)
                rows[who].append(h.run_wrk(f"http://127.0.0.1:{port}/", a.duration, a.connections))
            finally:
                proc.stop()
        print(f"[round {r + 1}] " + ", ".join(f"{who} {rs[-1]['rps']:.0f}" for who, rs in rows.items()), flush=True)
    print("\n| server (fixed response) | req/s | vs nginx | p50 / p99 ms |\n|---|---:|---:|---:|")
    nginx = statistics.median(x["rps"] for x in rows["nginx return 200"])
    for who, rs in rows.items():
        med = statistics.median(x["rps"] for x in rs)
        print(f"| {who} | {med:.0f} | {med / nginx:.2f}x | {statistics.median(x['p50_ms'] for x in rs):.2f} / "
              f"{statistics.median(x['p99_ms'] for x in rs):.2f} |")
    if a.idle:
        from loadtests.scaling import _idle_one
        for who, start in (("trivial granian app", lambda: start_trivial(tmp, {"backpressure": a.idle + 1024})),
                           ("trivial native front end", lambda: start_native(tmp))):
            g, gport = start()
            try:
                res = asyncio.run(_idle_one(gport, "/", a.idle, g.pid, 1.0))
            finally:
                g.stop()
            print(f"{who} with {a.idle} idle connections: {res['still_open']} held, RSS "
                  f"{res['rss_before_mb']} -> {res['rss_mb']} MB ({res['kb_per_conn']} KB/conn)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
