#!/usr/bin/env python3
"""Profile the gateway's plain http_proxy path under wrk with py-spy, and summarize.

    python loadtests/profile_proxy.py [--seconds 5] [--connections 64] [--native]
        [--scenario plain]     # any compare.py scenario key

Starts the nginx backend and the gateway, drives the scenario's path with wrk, records the
gateway's processes with ``py-spy record --subprocesses -f raw`` (``--native`` adds the C/Rust
frames), writes the raw stacks and an SVG flame graph under loadtests/results/, and prints
the top functions by self time and by inclusive time (share of the worker's samples).
Needs py-spy and permission to ptrace (root, or kernel.yama.ptrace_scope=0).
"""
from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests import harness as h  # noqa: E402


def summarize(raw: Path, top: int = 30) -> str:
    self_t: collections.Counter = collections.Counter()
    incl: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        n = int(n)
        frames = stack.split(";")
        # keep the worker's request path: drop the idle master / event loop waits
        total += n
        self_t[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    out = [f"{total} samples", "", "top self time:"]
    for f, n in self_t.most_common(top):
        out.append(f"  {100 * n / total:5.1f}%  {f}")
    out += ["", "top inclusive time:"]
    for f, n in incl.most_common(top + 15):
        out.append(f"  {100 * n / total:5.1f}%  {f}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--scenario", default="plain")
    ap.add_argument("--native", action="store_true")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    a = ap.parse_args(argv)
    h.require("py-spy")
    from loadtests.compare import gw_config, scenarios
    tmp = tempfile.mkdtemp(prefix="gwprof-")
    backend, bport = h.start_backend(tmp)
    try:
        sc = scenarios(bport)[a.scenario]
        cfg = Path(tmp, "gw.yaml")
        cfg.write_text(gw_config(sc, 1))
        gw, port, _ = h.start_gateway(cfg, Path(tmp, "gw.log"))
        try:
            url = f"http://127.0.0.1:{port}{sc.gw_path}"
            h.run_wrk(url, 2, a.connections, 1, sc.headers)
            res = {}
            t = threading.Thread(target=lambda: res.update(h.run_wrk(url, a.seconds + 3, a.connections, 1, sc.headers)))
            t.start()
            time.sleep(1)
            h.RESULTS.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            raw = h.RESULTS / f"profile-{a.scenario}-{stamp}.txt"
            cmd = ["py-spy", "record", "--subprocesses", "-f", "raw", "-r", str(a.rate), "-d", str(a.seconds),
                   "-o", str(raw), "--pid", str(gw.pid)] + (["--native"] if a.native else [])
            subprocess.run(cmd, capture_output=True)
            t.join()
            print(f"wrk during the profile: {res.get('rps', 0):.0f} req/s (sampling slows the worker)")
            svg = raw.with_suffix(".svg")
            subprocess.run(["py-spy", "record", "--help"], capture_output=True)
            print(summarize(raw))
            print(f"\nraw stacks: {raw}")
            _flame(raw, svg)
        finally:
            gw.stop()
    finally:
        backend.stop()
    return 0


def _flame(raw: Path, svg: Path) -> None:
    """py-spy's raw format is Brendan Gregg's collapsed format; flamegraph.pl if present."""
    import shutil
    fg = shutil.which("flamegraph.pl") or shutil.which("flamegraph")
    if fg:
        with open(svg, "wb") as f:
            subprocess.run([fg, str(raw)], stdout=f)
        print(f"flame graph: {svg}")


if __name__ == "__main__":
    sys.exit(main())
