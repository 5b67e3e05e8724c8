"""Helpers for the throttle / API key tests: a compiled gateway driven in-process with
hand-made requests (``InProcessGateway``), fake clocks, and a real redis-server."""
from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from proxy.app import GatewayApp
from proxy.config import load_config
from proxy.context import Request
from proxy.gateway import compile_gateway
from tests.helpers import free_port, wait_port


def sha(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


class InProcessGateway:
    """A gateway compiled from YAML text; ``call()`` runs one request through it.

    The memory store's monotonic clock (``mono``) and the throttle service's wall clock
    (``wall``) are fake, so bucket and quota arithmetic is exact.
    """

    def __init__(self, yaml_text: str, wall: float = 1_714_521_600.0):   # 2024-05-01 00:00 UTC
        self.dir = tempfile.mkdtemp(prefix="gwthr-")
        path = os.path.join(self.dir, "gateway.yaml")
        Path(path).write_text(yaml_text)
        cfg, loc = load_config(path)
        self.gw = compile_gateway(cfg, loc)
        self.app = GatewayApp(self.gw)
        self.mono = Clock(100.0)
        self.wall = Clock(wall)
        st = self.gw.services.state
        if getattr(st, "local", False):
            st.clock = self.mono
        self.gw.services.throttle.wall = self.wall
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self.gw.start())

    def call(self, method: str, path: str, headers: dict | None = None,
             client_ip: str = "10.0.0.1", peer_ip: str | None = None):
        hdrs = [(k.lower(), v) for k, v in (headers or {}).items()]
        req = Request(None, method, path, "", hdrs, client_ip, peer_ip or client_ip, "http",
                      "localhost", "1.1", "rid", time.perf_counter_ns(), time.time(), 1 << 20)
        resp = self.loop.run_until_complete(self.app.handle(req))
        return resp.status, dict(resp.headers), resp.body, req

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def admin(self, method: str, path: str, query: str = ""):
        from proxy.admin import AdminRequest, AdminRouter
        router = AdminRouter(self.gw)
        areq = AdminRequest(method, path, query, {}, b"", self.gw)
        return self.run(router.dispatch(areq))

    def close(self):
        self.loop.run_until_complete(self.gw.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def make_gateway():
    made = []

    def make(text: str, **kw) -> InProcessGateway:
        g = InProcessGateway(text, **kw)
        made.append(g)
        return g
    yield make
    for g in made:
        g.close()


# ---------------------------------------------------------------- a real redis-server

def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path:
        return path
    if os.environ.get("CI") == "true":
        raise RuntimeError("redis-server is missing: install the Debian package 'redis-server' "
                           "(the test command does: apt-get install -y redis-server)")
    pytest.skip("redis-server not installed (apt-get install redis-server); runs under CI=true")


class RedisServer:
    """A throwaway redis-server on a free port (no persistence), stoppable and restartable."""

    def __init__(self):
        self.binary = redis_server_binary()
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="gwredis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port("127.0.0.1", self.port, 10, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server():
    r = RedisServer().start()
    yield r
    r.close()
