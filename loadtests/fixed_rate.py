#!/usr/bin/env python3
"""Latency at a fixed offered rate (open loop), so p99 is comparable between servers.

wrk measures at saturation: each server runs as fast as it can, so their latencies are
taken at different loads. Here the client offers the same request rate to both, sends on
schedule whether or not earlier answers came back (open loop), and measures every latency
from the moment the request *should* have been sent (so a stall is charged to the server,
not hidden: no coordinated omission, as in wrk2).

Why not h2load --rate: its rate is *connections* per second (each new connection makes
its share of -n requests), not requests per second on keep-alive connections; and wrk2 is
not packaged in Debian. This client is asyncio + uvloop + httptools (llhttp), keep-alive
HTTP/1.1, one request in flight per connection, optionally split over several processes.

Single target::

    python loadtests/fixed_rate.py http://127.0.0.1:8080/b/pets/1 --rate 2000 --duration 10

Side by side (starts an nginx backend, nginx as a proxy and the gateway on a plain
http_proxy route; alternating rounds; median of each percentile)::

    python loadtests/fixed_rate.py --compare --rate 2000 --duration 10 --rounds 3

The offered rate must be below both servers' saturation point (see compare.py's req/s);
if the client could not keep up with its own schedule, or requests queued in the client
because every connection was busy, the summary says so (``late_sends``, ``queued_max``).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from array import array
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PCTS = (50, 90, 99, 99.9)


class _Conn(asyncio.Protocol):
    """One keep-alive connection; ``send(t_intended)`` one request at a time."""

    def __init__(self, client: "_Client"):
        import httptools
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport = None
        self.intended = 0
        self.status = 0
        self.closed = False

    # asyncio.Protocol
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except Exception:
            self.client.errors += 1
            self.transport.close()

    def connection_lost(self, exc):
        self.closed = True
        if self.intended:
            self.client.errors += 1
            self.client.inflight -= 1
            self.intended = 0
        self.client.lost(self)

    # httptools callbacks
    def on_message_complete(self):
        self.status = self.parser.get_status_code()
        t = self.intended
        self.intended = 0
        self.client.done(self, t, self.status)

    def send(self, intended: int):
        self.intended = intended
        self.client.inflight += 1
        self.transport.write(self.client.next_request())


class _Client:
    def __init__(self, host, port, requests: list[bytes], connections: int, loop):
        self.host, self.port = host, port
        self.requests = requests
        self._i = 0
        self.connections = connections
        self.loop = loop
        self.idle: deque[_Conn] = deque()
        self.pending: deque[int] = deque()   # intended send times waiting for a connection
        self.lat = array("q")
        self.record = False
        self.errors = 0
        self.non2xx = 0
        self.completed = 0
        self.queued_max = 0
        self.reconnects = 0
        self.inflight = 0

    async def connect(self):
        async def one():
            _, proto = await self.loop.create_connection(lambda: _Conn(self), self.host, self.port)
            self.idle.append(proto)
        for i in range(0, self.connections, 200):
            await asyncio.gather(*(one() for _ in range(min(200, self.connections - i))))

    def next_request(self) -> bytes:
        rs = self.requests
        if len(rs) == 1:
            return rs[0]
        self._i = (self._i + 1) % len(rs)
        return rs[self._i]

    def submit(self, intended: int):
        if self.idle:
            self.idle.pop().send(intended)
        else:
            self.pending.append(intended)
            if len(self.pending) > self.queued_max:
                self.queued_max = len(self.pending)

    def done(self, conn: _Conn, intended: int, status: int):
        now = time.perf_counter_ns()
        if intended:
            self.inflight -= 1
        if self.record and intended:
            self.lat.append(now - intended)
            self.completed += 1
            if not 200 <= status < 400:
                self.non2xx += 1
        if self.pending and not conn.closed:
            conn.send(self.pending.popleft())
        elif not conn.closed:
            self.idle.append(conn)

    def lost(self, conn: _Conn):
        try:
            self.idle.remove(conn)
        except ValueError:
            pass
        self.reconnects += 1
        self.loop.create_task(self._replace())

    async def _replace(self):
        try:
            _, proto = await self.loop.create_connection(lambda: _Conn(self), self.host, self.port)
        except OSError:
            self.errors += 1
            return
        self.done(proto, 0, 200)


def _encode(netloc: str, target: str, headers: dict) -> bytes:
    hdr = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\n{hdr}\r\n".encode("latin-1")


async def _run(url: str, rate: float, duration: float, warmup: float, connections: int,
               headers: dict, rotation: list | None = None) -> dict:
    u = urlsplit(url)
    host, port = u.hostname, u.port or 80
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    if rotation:   # [(path, headers), ...] cycled one per request (a mix)
        requests = [_encode(u.netloc, p, {**headers, **h}) for p, h in rotation]
    else:
        requests = [_encode(u.netloc, target, headers)]
    loop = asyncio.get_running_loop()
    c = _Client(host, port, requests, connections, loop)
    await c.connect()
    interval = 1e9 / rate
    late = 0
    perf = time.perf_counter_ns
    t0 = perf()
    warm_end = t0 + int(warmup * 1e9)
    end = warm_end + int(duration * 1e9)
    n = 0
    sleep = asyncio.sleep
    while True:
        now = perf()
        if now >= end:
            break
        if not c.record and now >= warm_end:
            c.record = True
        # send everything that is due (timer granularity is ~1 ms: a tick may owe several)
        due = t0 + int(n * interval)
        sent = 0
        while due <= now:
            c.submit(due)
            n += 1
            sent += 1
            due = t0 + int(n * interval)
        if sent > max(4, rate / 200):   # more than ~5 ms behind schedule at once
            late += 1
        await sleep(max(0.0, (due - perf()) / 1e9))
    sent_total = n
    # let the in-flight answers arrive (bounded)
    stop = perf() + 5 * 10**9
    while (c.pending or c.inflight) and perf() < stop:
        await sleep(0.01)
    c.record = False
    return {"lat": c.lat.tobytes(), "completed": c.completed, "errors": c.errors,
            "non2xx": c.non2xx, "queued_max": c.queued_max, "late_ticks": late,
            "sent": sent_total, "unfinished": len(c.pending) + c.inflight,
            "reconnects": c.reconnects}


def _worker(args) -> dict:
    from loadtests.harness import raise_nofile
    raise_nofile()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    return asyncio.run(_run(*args))


def measure(url: str, rate: float, duration: float = 10.0, warmup: float = 2.0, connections: int = 64,
            headers: dict | None = None, procs: int = 1, rotation: list | None = None) -> dict:
    """Offer ``rate`` req/s for ``warmup + duration`` seconds; summarize the last ``duration``.

    ``rotation``: optional [(path, headers), ...] sent in turn on ``url``'s host (a mix).
    """
    headers = headers or {}
    procs = max(1, procs)
    per = [(url, rate / procs, duration, warmup, max(1, connections // procs), headers, rotation)
           for _ in range(procs)]
    if procs == 1:
        parts = [_worker(per[0])]
    else:
        with mp.get_context("spawn").Pool(procs) as pool:
            parts = pool.map(_worker, per)
    lat = array("q")
    for p in parts:
        lat.frombytes(p["lat"])
    ms = sorted(x / 1e6 for x in lat)
    out = {"offered_rps": rate, "achieved_rps": round(len(ms) / duration, 1) if ms else 0.0,
           "connections": connections, "procs": procs, "duration_s": duration}
    for key in ("completed", "errors", "non2xx", "late_ticks", "unfinished", "reconnects"):
        out[key] = sum(p[key] for p in parts)
    out["queued_max"] = max(p["queued_max"] for p in parts)
    for q in PCTS:
        out[f"p{q:g}_ms"] = round(ms[min(len(ms) - 1, int(len(ms) * q / 100))], 3) if ms else None
    out["max_ms"] = round(ms[-1], 3) if ms else None
    out["mean_ms"] = round(statistics.fmean(ms), 3) if ms else None
    # the schedule was not met: the numbers describe an overloaded client or server
    # (a short stall may queue requests in the client for a moment: that is charged to the
    # latencies, not called saturation; queued_max says how deep it went)
    out["saturated"] = bool(out["unfinished"] or not ms or out["achieved_rps"] < 0.97 * rate)
    return out


def fmt(r: dict) -> str:
    s = (f"offered {r['offered_rps']:.0f}/s achieved {r['achieved_rps']:.0f}/s  "
         f"p50 {r['p50_ms']} ms  p90 {r['p90_ms']} ms  p99 {r['p99_ms']} ms  p99.9 {r['p99.9_ms']} ms  "
         f"max {r['max_ms']} ms  errors {r['errors']} non2xx {r['non2xx']} queued_max {r['queued_max']}")
    return s + ("  [SATURATED: rate not sustained]" if r["saturated"] else "")


def compare(rate: float, duration: float, warmup: float, rounds: int, connections: int, procs: int,
            workers: int) -> dict:
    """gwproxy vs nginx on the same plain http_proxy route, alternating rounds."""
    from loadtests import harness as h
    tmp = tempfile.mkdtemp(prefix="gwfixed-")
    backend, bport = h.start_backend(tmp)
    procs_up = [backend]
    try:
        cfg = Path(tmp, "gw.yaml")
        cfg.write_text(h.gateway_yaml(f"""      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{bport}/pets/{{id}}"}}
""", workers=workers))
        rows = {"nginx": [], "gwproxy": []}
        for r in range(rounds):
            np_, nport = h.start_nginx_proxy(tmp, bport, workers)
            rows["nginx"].append(measure(f"http://127.0.0.1:{nport}/pets/1", rate, duration, warmup,
                                         connections, None, procs))
            np_.stop()
            gp, gport, _ = h.start_gateway(cfg, Path(tmp, "gw.log"), workers)
            rows["gwproxy"].append(measure(f"http://127.0.0.1:{gport}/b/pets/1", rate, duration, warmup,
                                           connections, None, procs))
            gp.stop()
            print(f"[round {r + 1}] nginx   {fmt(rows['nginx'][-1])}", flush=True)
            print(f"[round {r + 1}] gwproxy {fmt(rows['gwproxy'][-1])}", flush=True)
    finally:
        for p in procs_up:
            p.stop()
    return summarize(rows)


def summarize(rows: dict) -> dict:
    out = {}
    for who, rs in rows.items():
        if not rs:
            continue
        med = {}
        for k in ("achieved_rps", "p50_ms", "p90_ms", "p99_ms", "p99.9_ms", "max_ms"):
            vals = [x[k] for x in rs if x.get(k) is not None]
            med[k] = statistics.median(vals) if vals else None
        med["offered_rps"] = rs[0]["offered_rps"]
        med["saturated_rounds"] = sum(1 for x in rs if x["saturated"])
        med["errors"] = sum(x["errors"] for x in rs)
        med["non2xx"] = sum(x["non2xx"] for x in rs)
        out[who] = med
    if "nginx" in out and "gwproxy" in out and out["nginx"]["p99_ms"]:
        out["p99_ratio"] = out["gwproxy"]["p99_ms"] / out["nginx"]["p99_ms"]
        out["p50_ratio"] = out["gwproxy"]["p50_ms"] / out["nginx"]["p50_ms"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url", nargs="?")
    ap.add_argument("--rate", type=float, required=True, help="offered requests per second")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds (after warm-up)")
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--procs", type=int, default=1, help="client processes sharing the rate")
    ap.add_argument("-H", "--header", action="append", default=[], help="'Name: value'")
    ap.add_argument("--compare", action="store_true", help="gwproxy vs nginx, plain http_proxy route")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", help="write the result here")
    a = ap.parse_args(argv)
    if a.compare:
        res = compare(a.rate, a.duration, a.warmup, a.rounds, a.connections, a.procs, a.workers)
        g, n = res["gwproxy"], res["nginx"]
        print(f"\nfixed rate {a.rate:.0f} req/s, {a.rounds} alternating rounds (median):")
        print("| server | p50 ms | p90 ms | p99 ms | p99.9 ms | saturated rounds |")
        print("|---|---:|---:|---:|---:|---:|")
        for who, r in (("gwproxy", g), ("nginx", n)):
            print(f"| {who} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | "
                  f"{r['p99.9_ms']:.3f} | {r['saturated_rounds']} |")
        print(f"p99 ratio gwproxy/nginx: {res['p99_ratio']:.2f}x (target <= 1.5x)")
    else:
        if not a.url:
            ap.error("a URL is required (or --compare)")
        hs = dict(x.split(":", 1) for x in a.header)
        res = measure(a.url, a.rate, a.duration, a.warmup, a.connections,
                      {k.strip(): v.strip() for k, v in hs.items()}, a.procs)
        print(fmt(res))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
