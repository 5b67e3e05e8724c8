#!/usr/bin/env python3
"""How the gateway scales: with the number of routes, the payload size, and idle keep-alive
connections.

    python loadtests/scaling.py routes  [--sizes 10,1000,10000]  [--rounds 3 --duration 10]
    python loadtests/scaling.py payload [--sizes 0,1024,102400]  [--rounds 3 --duration 10]
    python loadtests/scaling.py idle    [--counts 1000,10000]
    python loadtests/scaling.py all     (the three above with their defaults)

routes
    A REST API with N routes (services of five: ``GET /svcI/items``, ``POST /svcI/items``,
    ``GET /svcI/items/{id}``, ``POST /svcI/items/{id}/tags/{tag}``,
    ``ANY /svcI/files/{proxy+}``, all http_proxy to the nginx backend). wrk cycles over
    static, ``{param}`` and greedy paths in the first, middle and last service. Sizes
    alternate within each round. Prints startup time (config load + compile), req/s,
    p99, gateway RSS after the run and req/s relative to the smallest table
    (target: 10,000 routes cost at most 5%).
payload
    ``GET /b/payload/<bytes>`` through the gateway and through nginx-as-proxy to nginx
    serving static files of 0 B, 1 KB and 100 KB; alternating rounds; req/s, MB/s, ratio.
idle
    Opens N keep-alive connections to the gateway, sends one request on each (so each is a
    real, served HTTP/1.1 connection), and holds them idle. Prints the gateway's RSS (sum
    over granian's processes; PSS too, which counts shared pages once) before and with the
    connections open, the cost per connection, and the latency of 200 requests on one more
    connection while they are held (target: under 200 MB RSS at 10,000). nginx-as-proxy is
    measured the same way for reference. The fd limit is raised for the client and both
    servers (hard limit permitting).

Results are printed as tables and written as JSON to loadtests/results/scaling-<what>-<ts>.json.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtests import harness as h  # noqa: E402

GROUP = (
    ("GET", "/svc{i}/items", "/svc{i}/items"),
    ("POST", "/svc{i}/items", "/svc{i}/items"),
    ("GET", "/svc{i}/items/{{id}}", "/svc{i}/items/{{id}}"),
    ("POST", "/svc{i}/items/{{id}}/tags/{{tag}}", "/svc{i}/items/{{id}}/tags/{{tag}}"),
    ("ANY", "/svc{i}/files/{{proxy+}}", "/svc{i}/files/{{proxy}}"),
)


def routes_yaml(n: int, up: str) -> str:
    lines = []
    i = 0
    count = 0
    while count < n:
        for method, route, uri in GROUP:
            if count == n:
                break
            lines.append(f"      - route: {method} {route.format(i=i)}\n"
                         f"        integration: {{type: http_proxy, uri: \"{up}{uri.format(i=i)}\"}}\n")
            count += 1
        i += 1
    return "".join(lines)


def route_paths(n: int) -> list[tuple[str, dict]]:
    last = (n - 1) // len(GROUP)
    out = []
    for svc in sorted({0, last // 2, last}):
        out.append((f"/b/svc{svc}/items", {}))
        out.append((f"/b/svc{svc}/items/42", {}))
        if n >= 5 or svc < last:
            out.append((f"/b/svc{svc}/files/a/b/c.txt", {}))
    return out


def _save(what: str, data) -> Path:
    h.RESULTS.mkdir(parents=True, exist_ok=True)
    p = h.RESULTS / f"scaling-{what}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    p.write_text(json.dumps(data, indent=2))
    return p


# -- routes -----------------------------------------------------------------------------------

def scale_routes(args, tmp: str, bport: int) -> dict:
    up = f"http://127.0.0.1:{bport}"
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else [10, 1000, 10000]
    rows: dict[int, list] = {n: [] for n in sizes}
    for n in sizes:
        Path(tmp, f"routes-{n}.yaml").write_text(h.gateway_yaml(routes_yaml(n, up), workers=args.workers))
        h.write_wrk_paths_script(Path(tmp, f"routes-{n}.lua"), route_paths(n))
    for r in range(args.rounds):
        for n in sizes:
            gw, port, started = h.start_gateway(Path(tmp, f"routes-{n}.yaml"), Path(tmp, f"routes-{n}.log"),
                                                args.workers)
            try:
                mem0 = h.tree_memory(gw.pid)
                url = f"http://127.0.0.1:{port}/"
                script = str(Path(tmp, f"routes-{n}.lua"))
                h.run_wrk(url, min(2, args.duration), args.connections, 1, None, script)
                res = h.run_wrk(url, args.duration, args.connections, 1, None, script)
                res.pop("raw")
                res.update(startup_s=round(started, 2), rss_idle_mb=mem0["rss_mb"], **h.tree_memory(gw.pid))
            finally:
                gw.stop()
            rows[n].append(res)
            print(f"[routes round {r + 1}] {n:>6} routes: {res['rps']:.0f} req/s, p99 {res['p99_ms']} ms, "
                  f"non-2xx {res['non2xx']}, startup {started:.2f} s, RSS {res['rss_mb']} MB", flush=True)
    out = {}
    for n in sizes:
        rs = rows[n]
        out[n] = {k: statistics.median(x[k] for x in rs if x.get(k) is not None)
                  for k in ("rps", "p50_ms", "p99_ms", "startup_s", "rss_mb", "rss_idle_mb", "pss_mb")}
        out[n]["non2xx"] = sum(x["non2xx"] for x in rs)
    base = out[sizes[0]]["rps"]
    print(f"\n| routes | req/s | vs {sizes[0]} routes | p50 / p99 ms | startup s | RSS idle / after MB |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        o = out[n]
        o["vs_smallest"] = o["rps"] / base
        print(f"| {n:,} | {o['rps']:.0f} | {o['vs_smallest']:.3f}x | {o['p50_ms']:.2f} / {o['p99_ms']:.2f} | "
              f"{o['startup_s']:.2f} | {o['rss_idle_mb']:.0f} / {o['rss_mb']:.0f} |")
    return out


# -- payload ----------------------------------------------------------------------------------

def scale_payload(args, tmp: str, bport: int) -> dict:
    up = f"http://127.0.0.1:{bport}"
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else list(h.PAYLOAD_SIZES)
    for n in sizes:
        p = Path(tmp, "payload", str(n))
        if not p.exists():
            p.write_bytes(b"x" * n)
            p.chmod(0o644)
    cfg = Path(tmp, "payload.yaml")
    cfg.write_text(h.gateway_yaml(f"""      - route: GET /payload/{{name}}
        integration: {{type: http_proxy, uri: "{up}/payload/{{name}}"}}
""", workers=args.workers))
    rows = {n: {"nginx": [], "gwproxy": []} for n in sizes}
    for r in range(args.rounds):
        for n in sizes:
            np_, nport = h.start_nginx_proxy(tmp, bport, args.workers)
            try:
                url = f"http://127.0.0.1:{nport}/payload/{n}"
                h.run_wrk(url, min(2, args.duration), args.connections)
                rows[n]["nginx"].append(h.run_wrk(url, args.duration, args.connections))
            finally:
                np_.stop()
            gw, port, _ = h.start_gateway(cfg, Path(tmp, "payload.log"), args.workers)
            try:
                url = f"http://127.0.0.1:{port}/b/payload/{n}"
                h.run_wrk(url, min(2, args.duration), args.connections)
                res = h.run_wrk(url, args.duration, args.connections)
                res.update(h.tree_memory(gw.pid))
                rows[n]["gwproxy"].append(res)
            finally:
                gw.stop()
            g, x = rows[n]["gwproxy"][-1], rows[n]["nginx"][-1]
            print(f"[payload round {r + 1}] {n:>6} B: gwproxy {g['rps']:.0f} req/s ({g['mb_per_s']:.1f} MB/s, "
                  f"p99 {g['p99_ms']} ms, non-2xx {g['non2xx']}), nginx {x['rps']:.0f} req/s "
                  f"({x['mb_per_s']:.1f} MB/s, p99 {x['p99_ms']} ms, non-2xx {x['non2xx']})", flush=True)
    out = {}
    print("\n| payload | gwproxy req/s | MB/s | p99 ms | nginx req/s | MB/s | p99 ms | ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        o = {}
        for who in ("gwproxy", "nginx"):
            rs = rows[n][who]
            o[who] = {k: statistics.median(x[k] for x in rs if x.get(k) is not None)
                      for k in ("rps", "mb_per_s", "p50_ms", "p99_ms")}
            for x in rs:
                x.pop("raw", None)
        o["ratio"] = o["gwproxy"]["rps"] / o["nginx"]["rps"]
        out[n] = o
        g, x = o["gwproxy"], o["nginx"]
        print(f"| {n:,} B | {g['rps']:.0f} | {g['mb_per_s']:.1f} | {g['p99_ms']:.2f} | {x['rps']:.0f} | "
              f"{x['mb_per_s']:.1f} | {x['p99_ms']:.2f} | {o['ratio']:.2f}x |")
    return out


# -- idle keep-alive connections --------------------------------------------------------------

async def _hold(port: int, path: str, n: int, batch: int = 250):
    """Open n connections, one served GET on each; return (writers, failures)."""
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    conns = []
    fails = 0
    kinds: dict = {}

    async def one():
        nonlocal fails
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
            w.write(req)
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
            cl = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    cl = int(line.split(b":", 1)[1])
            if cl:
                await asyncio.wait_for(r.readexactly(cl), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                fails += 1
            conns.append((r, w))
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
            fails += 1
            k = type(e).__name__ + (f"({e.errno})" if isinstance(e, OSError) and e.errno else "")
            kinds[k] = kinds.get(k, 0) + 1
    for i in range(0, n, batch):
        await asyncio.gather(*(one() for _ in range(min(batch, n - i))))
    if kinds:
        print(f"  connection failures: {kinds}", flush=True)
    return conns, fails


async def _probe(port: int, path: str, count: int = 200) -> dict:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    lat = []
    for _ in range(count):
        t = time.perf_counter()
        w.write(req)
        head = await r.readuntil(b"\r\n\r\n")
        cl = next((int(x.split(b":", 1)[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length:")), 0)
        if cl:
            await r.readexactly(cl)
        lat.append((time.perf_counter() - t) * 1000)
    w.close()
    lat.sort()
    return {"probe_p50_ms": round(lat[len(lat) // 2], 3), "probe_p99_ms": round(lat[int(len(lat) * 0.99)], 3)}


async def _idle_one(port: int, path: str, n: int, pid: int, settle: float) -> dict:
    before = h.tree_memory(pid)
    t = time.monotonic()
    conns, fails = await _hold(port, path, n)
    opened = time.monotonic() - t
    await asyncio.sleep(settle)
    during = h.tree_memory(pid)
    alive = await _still_open(conns)
    probe = await _probe(port, path)
    for _, w in conns:
        w.close()
    await asyncio.sleep(0.5)
    per_conn_kb = ((during["rss_mb"] - before["rss_mb"]) * 1024 / max(1, len(conns))) if conns else None
    return {"connections": n, "open": len(conns), "failed": fails, "still_open": alive,
            "open_s": round(opened, 2), "rss_before_mb": before["rss_mb"], "rss_mb": during["rss_mb"],
            "pss_mb": during["pss_mb"], "worker_rss_mb": during["worker_rss_mb"],
            "kb_per_conn": round(per_conn_kb, 1) if per_conn_kb is not None else None, **probe}


async def _still_open(conns) -> int:
    """Connections the server has not closed (the reader sees EOF when it does)."""
    await asyncio.sleep(0.2)
    return sum(1 for r, w in conns if not r.at_eof() and not w.is_closing())


def scale_idle(args, tmp: str, bport: int) -> dict:
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    counts = [int(x) for x in args.counts.split(",")] if args.counts else [1000, 10000]
    have = h.raise_nofile(max(counts) + 1024)
    if have < max(counts) + 100:
        print(f"warning: open-file limit is {have}; counts above it will fail", file=sys.stderr)
    cfg = Path(tmp, "idle.yaml")
    cfg.write_text(h.gateway_yaml(f"""      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{bport}/pets/{{id}}"}}
""", workers=args.workers))
    out: dict = {"gwproxy": {}, "nginx": {}}
    for n in counts:
        env = {"GWPROXY_GRANIAN": args.granian} if args.granian else None
        gw, port, _ = h.start_gateway(cfg, Path(tmp, "idle.log"), args.workers, env_extra=env)
        try:
            res = asyncio.run(_idle_one(port, "/b/pets/1", n, gw.pid, args.settle))
        finally:
            gw.stop()
        out["gwproxy"][n] = res
        print(f"[idle] gwproxy {n:>6} conns: {res['open']} open ({res['failed']} failed, {res['still_open']} still "
              f"open after {args.settle:.0f} s), RSS {res['rss_before_mb']} -> {res['rss_mb']} MB "
              f"(PSS {res['pss_mb']}), {res['kb_per_conn']} KB/conn, probe p50 {res['probe_p50_ms']} ms", flush=True)
        if not args.no_nginx:
            np_, nport = h.start_nginx_proxy(tmp, bport, args.workers)
            try:
                res = asyncio.run(_idle_one(nport, "/pets/1", n, np_.pid, args.settle))
            finally:
                np_.stop()
            out["nginx"][n] = res
            print(f"[idle] nginx   {n:>6} conns: {res['open']} open, RSS {res['rss_before_mb']} -> {res['rss_mb']} MB, "
                  f"{res['kb_per_conn']} KB/conn", flush=True)
    print("\n| idle connections | gwproxy RSS MB (PSS) | KB/conn | probe p50 / p99 ms | nginx RSS MB |")
    print("|---:|---:|---:|---:|---:|")
    for n in counts:
        g = out["gwproxy"][n]
        x = out["nginx"].get(n)
        print(f"| {n:,} ({g['open']} open, {g['still_open']} held) | {g['rss_mb']} ({g['pss_mb']}) | {g['kb_per_conn']} | "
              f"{g['probe_p50_ms']} / {g['probe_p99_ms']} | {x['rss_mb'] if x else '-'} |")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["routes", "payload", "idle", "all"])
    ap.add_argument("--sizes", help="routes: route counts; payload: bytes (comma-separated)")
    ap.add_argument("--counts", help="idle: connection counts (comma-separated)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--settle", type=float, default=3.0, help="idle: seconds to hold before measuring")
    ap.add_argument("--no-nginx", action="store_true", help="idle: skip the nginx reference")
    ap.add_argument("--granian", default="",
                    help="granian settings for the gateway as k=v,k=v (GWPROXY_GRANIAN), "
                         "e.g. backpressure=16384 for the idle test")
    args = ap.parse_args(argv)
    h.require("wrk")
    h.raise_nofile()
    tmp = tempfile.mkdtemp(prefix="gwscale-")
    backend, bport = h.start_backend(tmp)
    meta = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": h.cpu_model(), "rounds": args.rounds,
            "duration_s": args.duration, "connections": args.connections, "workers": args.workers}
    try:
        whats = ["routes", "payload", "idle"] if args.what == "all" else [args.what]
        for w in whats:
            if args.what == "all":
                args.sizes = None
            res = {"routes": scale_routes, "payload": scale_payload, "idle": scale_idle}[w](args, tmp, bport)
            print(f"results: {_save(w, {'meta': meta, 'results': res})}\n")
    finally:
        backend.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
