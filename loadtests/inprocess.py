#!/usr/bin/env python3
"""The gateway's own CPU per request, in-process, without sockets: the native front end, the
app and the upstream client driven through fake transports, so that the kernel (and the
VM's noise in it) is out of the figure.

    python loadtests/inprocess.py [--requests 200000] [--rounds 3] [--pure]
                                  [--scenarios plain,mock,cache_hit]

Each round feeds a keep-alive client connection one request at a time (``data_received``
with the request bytes, as uvloop would), answers what the gateway sent upstream with a
canned response of the nginx backend's shape, and checks that the client got a 200. It
reports user+system CPU microseconds per request (the process's rusage; system time is
near zero here: no syscalls). Use it to measure a change to the request path before and
after; the wrk comparisons (compare.py) remain the figures that count.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

REQUEST = b"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
BODY = b'{"id": 1, "name": "rex", "tag": "dog"}'
UPSTREAM = (b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Sun, 22 Nov 2026 10:00:00 GMT\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n"
            % len(BODY) + BODY)

CONFIG = """server: {{workers: 1, access_log: false}}
throttle: {{rate: 1000000000, burst: 1000000000}}
apis:
  bench:
    type: rest
    stages:
      b:
        variables: {{}}
{cache}
    routes:
      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:9/pets/{{id}}"}}
      - route: GET /mock
        integration: {{type: mock, status: 200, body: '{{"ok":true}}'}}
"""

SCENARIOS = {
    "plain": ("/b/pets/1", False),
    "mock": ("/b/mock", False),
    "cache_hit": ("/b/pets/1", True),
}


class ClientTransport:
    def __init__(self):
        self.out = 0
        self.last = b""

    def write(self, data):
        self.out += 1
        self.last = data

    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self):
        return False

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def close(self):
        raise AssertionError("the client connection was closed")

    abort = close


class UpstreamTransport:
    """Records that a request went out; the driver answers it after the call returns."""

    def __init__(self, conn, pending: list):
        self.conn = conn
        self.pending = pending

    def write(self, data):
        self.pending.append(self.conn)

    def get_extra_info(self, name, default=None):
        return default

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass

    def abort(self):
        raise AssertionError("the upstream connection was closed")


def idle_upstream(h1client, pool, loop, pending):
    """Put one fake, kept-alive connection into ``pool`` (as if a request had used it)."""
    conn = h1client.Connection(pool, loop)
    conn.connection_made(UpstreamTransport(conn, pending))
    pool._loop = loop
    pool._open += 1
    pool._in_use += 1
    pool._conns.add(conn)
    conn.state = h1client.ACTIVE
    pool._release(conn)


async def measure(scenario: str, n: int, rounds: int) -> list[float]:
    import gwcore
    from proxy.app import GatewayApp
    from proxy.gateway import load_gateway

    path, cached = SCENARIOS[scenario]
    tmp = tempfile.mkdtemp(prefix="gwinproc-")
    cfg = Path(tmp, "gw.yaml")
    cfg.write_text(CONFIG.format(cache="        cache: {enabled: true, ttl: 3600, capacity_mb: 64}"
                                 if cached else ""))
    app = GatewayApp(load_gateway(str(cfg)))
    app.raw_paths = True
    loop = asyncio.get_running_loop()
    await app.gw.start()
    http1 = gwcore.load("http1")
    h1client = gwcore.load("h1client")
    pool = app.gw.services.upstreams.pool("127.0.0.1", 9)
    pending: list = []
    idle_upstream(h1client, pool, loop, pending)
    srv = http1.FrontendServer(app, loop)
    client = http1.Connection(srv)
    ct = ClientTransport()
    client.connection_made(ct)
    req = REQUEST.replace(b"{path}", path.encode())

    def one():
        client.data_received(req)
        while pending:
            pending.pop().data_received(UPSTREAM)

    for _ in range(2000):       # warm: cache filled, branches taken; a first answer may be
        before = ct.out         # awaited (a cache miss): let the loop run until it is sent
        client.data_received(req)
        for _ in range(1000):
            while pending:
                pending.pop().data_received(UPSTREAM)
            if ct.out > before:
                break
            await asyncio.sleep(0)
    if not ct.last.startswith(b"HTTP/1.1 200 "):
        raise SystemExit(f"{scenario}: unexpected answer {ct.last[:80]!r}")
    out = []
    for _ in range(rounds):
        before = ct.out
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        for _ in range(n):
            one()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        if ct.out - before != n:
            raise SystemExit(f"{scenario}: {ct.out - before} answers for {n} requests (not all "
                             f"answered at once: this tool measures the synchronous paths)")
        cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
        out.append(cpu / n * 1e6)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenarios", default="plain,mock,cache_hit")
    ap.add_argument("--pure", action="store_true", help="the pure-Python twins (GWCORE_PURE=1)")
    args = ap.parse_args()
    if args.pure:
        os.environ["GWCORE_PURE"] = "1"
    sys.path.insert(0, str(ROOT))
    import uvloop
    import gwcore
    print(f"{time.strftime('%Y-%m-%d')}, gwcore: {gwcore.implementation()}")
    for sc in args.scenarios.split(","):
        res = uvloop.run(measure(sc, args.requests, args.rounds))
        print(f"{sc:10s} CPU per request: median {sorted(res)[len(res) // 2]:.2f} us "
              f"(rounds: {', '.join(f'{x:.2f}' for x in res)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
