"""Helpers for the cache tests: a stage built from config dicts, hand-made Requests, a
counting fake integration, and a real redis-server on a free port."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from types import SimpleNamespace

import pytest

from proxy import cache
from proxy.context import Request, Response
from proxy.gateway import RouteBuild
from tests.helpers import free_port, wait_port


def run(coro):
    return asyncio.run(coro)


class Body:
    """The request ``proto``: an async iterator over body chunks."""

    def __init__(self, data: bytes = b""):
        self.data = data

    def __aiter__(self):
        async def gen():
            if self.data:
                yield self.data
        return gen()


def make_request(method="GET", path="/prod/pets/1", query="", headers=(), params=None,
                 api_key=None, principal=None, body=b"", host="api.test") -> Request:
    hs = [(k.lower(), v) for k, v in headers]
    if body:
        hs.append(("content-length", str(len(body))))
    r = Request(Body(body), method, path, query, hs, "127.0.0.1", "127.0.0.1", "http", host,
                "1.1", "rid", time.perf_counter_ns(), time.time(), 1 << 20)
    r.path_params = {"id": "1"} if params is None else params
    r.api_key = api_key
    r.principal = principal
    return r


class Upstream:
    """A fake integration: counts calls; ``respond(req, n)`` builds the answer."""

    def __init__(self, respond=None, delay: float = 0.0):
        self.calls = 0
        self.seen: list = []
        self.delay = delay
        self.respond = respond or (lambda req, n: Response(
            200, [("content-type", "text/plain")], f"body {n} {req.path}?{req.query}".encode()))

    async def __call__(self, req):
        self.calls += 1
        n = self.calls
        self.seen.append(req)
        if self.delay:
            await asyncio.sleep(self.delay)
        r = self.respond(req, n)
        if asyncio.iscoroutine(r):
            r = await r
        return r


def build(stage_cache=None, route_cache=None, route="GET /pets/{id}", cfg=None, api_extra=None,
          route_extra=None, stage_name="prod", gw=None):
    """(stage, service, gateway) for one route; stage is None when the route is not cached."""
    if gw is None:
        gw = SimpleNamespace(cfg=cfg or {}, services=SimpleNamespace())
        gw.services.cache = cache.build_service(gw)
    method, _, path = route.partition(" ")
    stage_cfg = {"cache": {"enabled": True, "ttl": 300, "hit_header": True, **(stage_cache or {})}}
    route_cfg = {"route": route, "integration": {"type": "mock"}, **(route_extra or {})}
    if route_cache is not None:
        route_cfg["cache"] = route_cache
    api = {"type": "rest", **(api_extra or {})}
    rb = RouteBuild(gw, "shop", api, stage_name, stage_cfg, route_cfg, 0, method, path, None)
    return cache.build_stage(rb), gw.services.cache, gw


async def call(stage, up, **kw):
    r = await stage(make_request(**kw), up)
    if r.stream is not None:
        r.body = b"".join([c async for c in r.stream])
        r.stream = None
    return r


def hdr(resp, name):
    for k, v in resp.headers:
        if k.lower() == name:
            return v
    return None


# ------------------------------------------------------------------ real redis-server

class RedisServer:
    def __init__(self):
        exe = shutil.which("redis-server")
        if exe is None:
            if os.environ.get("CI") == "true":
                raise RuntimeError("redis-server is required under CI=true")
            pytest.skip("redis-server not installed")
        self.dir = tempfile.mkdtemp(prefix="gwredis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port("127.0.0.1", self.port, 10, self.proc)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_server():
    srv = RedisServer()
    yield srv
    srv.stop()


@pytest.fixture
def redis_url(redis_server):
    import redis
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url
