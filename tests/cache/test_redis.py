"""The Redis-shared cache against a real redis-server (started by the tests; under
CI=true a missing redis-server is an error, never a skip)."""
from __future__ import annotations

import asyncio

import pytest
import redis

from proxy.cache.entry import Entry, VaryEntry, decode, encode
from proxy.context import Response
from tests.helpers import GatewayProcess, free_port

from .conftest import Upstream, build, call, hdr, run
from .upstream import CountingUpstream

pytestmark = pytest.mark.redis


def _cfg(url, **extra):
    return {"state": {"backend": "redis", "url": url, "timeout": 0.5, **extra}}


def test_entry_byte_format_round_trips():
    e = Entry(b"canon\x00\xff", 203, [("Content-Type", "a/b"), ("X", "\u00e9")], b"\x00body", 12.5,
              99.0, "GET /pets/{id}", ("accept",))
    d = decode(encode(e), 1.0)
    assert (d.canon, d.status, d.headers, d.body, d.stored, d.route, d.vary) == \
        (e.canon, 203, e.headers, e.body, 12.5, e.route, ("accept",))
    v = decode(encode(VaryEntry(b"c", ("a", "b"), 5.0, "r")), 1.0)
    assert isinstance(v, VaryEntry) and v.names == ("a", "b") and v.canon == b"c"
    assert decode(b"garbage", 1.0) is None


def test_two_services_share_entries_through_redis(redis_url):
    st1, svc1, _ = build(cfg=_cfg(redis_url))
    st2, svc2, _ = build(cfg=_cfg(redis_url))
    up = Upstream()

    async def go():
        a = await call(st1, up)
        b = await call(st2, up)
        await svc1.close()
        await svc2.close()
        return a, b
    a, b = run(go())
    assert up.calls == 1 and hdr(b, "x-cache") == "Hit" and b.body == a.body
    r = redis.Redis.from_url(redis_url)
    keys = r.keys(b"gwproxy:cache:*")
    assert len(keys) == 1
    ttl = r.pttl(keys[0])
    assert 0 < ttl <= 300_000


def test_ttl_is_enforced_by_redis(redis_url):
    st, svc, _ = build(cfg=_cfg(redis_url), stage_cache={"ttl": 1})
    up = Upstream()

    async def go():
        await call(st, up)
        b = await call(st, up)
        await asyncio.sleep(1.2)
        c = await call(st, up)
        await svc.close()
        return b, c
    b, c = run(go())
    assert hdr(b, "x-cache") == "Hit" and hdr(c, "x-cache") == "Miss" and up.calls == 2


def test_vary_and_size_limits_with_redis(redis_url):
    st, svc, _ = build(cfg=_cfg(redis_url), stage_cache={"max_entry_bytes": 100})

    def respond(req, n):
        if req.path.endswith("big"):
            return Response(200, [], b"x" * 101)
        return Response(200, [("Vary", "Accept")], f"{req.header('accept')}".encode())
    up = Upstream(respond)

    async def go():
        out = []
        for acc in ("a", "b", "a", "b"):
            out.append(await call(st, up, headers=[("accept", acc)]))
        await call(st, up, path="/prod/big")
        await call(st, up, path="/prod/big")
        await svc.close()
        return out
    out = run(go())
    assert [r.body for r in out] == [b"a", b"b", b"a", b"b"]
    assert [hdr(r, "x-cache") for r in out] == ["Miss", "Miss", "Hit", "Hit"]
    assert up.calls == 4


def test_coalescing_with_redis(redis_url):
    st, svc, _ = build(cfg=_cfg(redis_url))
    up = Upstream(delay=0.1)

    async def go():
        rs = await asyncio.gather(*[call(st, up) for _ in range(50)])
        await svc.close()
        return rs
    rs = run(go())
    assert up.calls == 1 and len({r.body for r in rs}) == 1


def test_flush_stage_and_route_in_redis(redis_url):
    from types import SimpleNamespace
    from proxy import cache
    gw = SimpleNamespace(cfg=_cfg(redis_url), services=SimpleNamespace())
    gw.services.cache = cache.build_service(gw)
    a, svc, _ = build(route="GET /pets/{id}", gw=gw)
    b, _, _ = build(route="GET /cats/{id}", gw=gw)
    up = Upstream()

    async def go():
        await call(a, up)
        await call(b, up, path="/prod/cats/1")
        assert await svc.flush("shop", "prod", "GET /pets/{id}") == 1
        assert hdr(await call(b, up, path="/prod/cats/1"), "x-cache") == "Hit"
        assert hdr(await call(a, up), "x-cache") == "Miss"
        assert await svc.flush("shop", "prod") == 2
        assert hdr(await call(b, up, path="/prod/cats/1"), "x-cache") == "Miss"
        await svc.close()
    run(go())


def test_redis_unreachable_serves_from_the_integration():
    url = f"redis://127.0.0.1:{free_port()}/0"      # nothing listens there
    st, svc, _ = build(cfg=_cfg(url, timeout=0.2))
    up = Upstream()

    async def go():
        rs = [await call(st, up) for _ in range(3)]
        await svc.close()
        return rs
    rs = run(go())
    assert all(r.status == 200 for r in rs) and up.calls == 3
    assert svc.redis.errors >= 1


def _gw_config(up_port: int, redis_url: str) -> str:
    return f"""
state: {{backend: redis, url: "{redis_url}", timeout: 500ms}}
apis:
  shop:
    type: rest
    stages:
      prod:
        cache: {{enabled: true, ttl: 30, hit_header: true}}
    routes:
      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{up_port}/pets/{{id}}"}}
      - route: GET /reflect
        integration: {{type: http_proxy, uri: "http://127.0.0.1:{up_port}/reflect"}}
"""


def test_shared_cache_across_two_gateway_processes(redis_url):
    # both nodes behind one name (a load balancer in front): the Host is part of the key
    H = {"Host": "api.example"}
    with CountingUpstream() as up:
        cfg = _gw_config(up.port, redis_url)
        with GatewayProcess(cfg, admin=True) as g1, GatewayProcess(cfg) as g2:
            s, h, b1 = g1.request("GET", "/prod/pets/1", headers=H)
            assert s == 200 and h["x-cache"] == "Miss", g1.logs()
            s, h, b2 = g2.request("GET", "/prod/pets/1", headers=H)
            assert s == 200 and h["x-cache"] == "Hit" and b2 == b1, g2.logs()
            assert up.counts["/pets/1"] == 1
            # poisoning attempt on one node does not reach the other node's callers
            s, h, evil = g1.request("GET", "/prod/reflect", headers={**H, "X-Evil-Host": "evil.example"})
            assert b"evil.example" in evil
            s, h, clean = g2.request("GET", "/prod/reflect", headers=H)
            assert b"evil" not in clean
            # a flush through node 1's admin API empties the shared cache for node 2
            s, h, b = g1.request("DELETE", "/cache/shop/prod", admin=True)
            assert s == 200 and b'"flushed"' in b
            s, h, b3 = g2.request("GET", "/prod/pets/1", headers=H)
            assert h["x-cache"] == "Miss" and up.counts["/pets/1"] == 2
