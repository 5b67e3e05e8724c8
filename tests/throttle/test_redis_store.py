"""The Redis store against a real redis-server (started here): the same decisions as the
memory table, batching, failure (UNAVAILABLE, on_failure open/closed) and recovery."""
from __future__ import annotations

import asyncio
import json
import math

import pytest

import gwcore
from proxy.state import UNAVAILABLE, StoreUnavailable
from proxy.state.redisstore import RedisStore

pytestmark = pytest.mark.redis
rl = gwcore.load("ratelimit")


def store_for(redis_server, **kw):
    return RedisStore({"backend": "redis", "url": redis_server.url, "timeout": 0.5,
                       "on_failure": "open", **kw})


def test_take_semantics_match_the_memory_table(redis_server):
    async def main():
        s = store_for(redis_server)
        await s.start()
        plan = rl.Bucket("plan", 100, 100)
        route = rl.Bucket("route", 0.001, 2)
        quota = rl.Counter("quota", limit=3, ttl=100)
        usage = rl.Counter("usage")
        r = [await s.take([plan, route], [quota, usage], 1.0, 1) for _ in range(3)]
        assert r[0] == (-1, 0.0) and r[1] == (-1, 0.0)
        assert r[2][0] == 1 and r[2][1] > 900                 # route empty: ~1000 s to refill
        vals = await s.read([plan, quota, usage])
        assert vals[1:] == [2.0, 2.0]                         # the refused one counted nothing
        assert 98.0 <= vals[0] <= 98.1                        # ... and took no plan token
        q2 = rl.Counter("quota2", limit=1, ttl=100)
        assert (await s.take([], [q2]))[0] == -1
        assert await s.take([], [q2]) == (0, 0.0)             # counter index len(buckets)+0
        never = rl.Bucket("never", 0, 0)
        f, w = await s.take([never])
        assert f == 0 and math.isinf(w)
        await s.write(rl.Counter("flag", ttl=10), 2)
        assert await s.read([rl.Counter("flag"), rl.Counter("absent"), rl.Bucket("nob", 1, 7)]) == [2.0, 0.0, 7.0]
        await s.close()
    asyncio.run(main())


def test_concurrent_decisions_are_batched_and_exact(redis_server):
    async def main():
        s = store_for(redis_server)
        await s.start()
        b = rl.Bucket("batch", 0.0, 500)
        res = await asyncio.gather(*[s.take([b]) for _ in range(800)])
        assert sum(1 for f, _ in res if f == -1) == 500
        st = s.stats()
        assert st["decisions"] == 800 and st["batches"] < 20     # not one round trip each
        await s.close()
    asyncio.run(main())


def test_unreachable_redis_is_unavailable_then_recovers(redis_server, caplog):
    async def main():
        s = store_for(redis_server)
        await s.start()
        b = rl.Bucket("r", 1000, 1000)
        assert (await s.take([b]))[0] == -1
        redis_server.stop()
        assert (await s.take([b]))[0] == UNAVAILABLE
        assert s.up is False
        t0 = asyncio.get_running_loop().time()
        for _ in range(50):                                   # answered at once while down
            assert (await s.take([b]))[0] == UNAVAILABLE
        assert asyncio.get_running_loop().time() - t0 < 0.2
        with pytest.raises(StoreUnavailable):
            await s.read([b])
        redis_server.start()
        for _ in range(50):
            await asyncio.sleep(0.1)
            if s.up:
                break
        assert s.up, s.stats()
        assert (await s.take([b]))[0] == -1                   # script reloaded after restart
        st = s.stats()
        assert st["outages"] == 1 and st["errors"] >= 1
        await s.close()
    with caplog.at_level("INFO", logger="gwproxy.state"):
        asyncio.run(main())
    text = caplog.text
    assert "unreachable" in text and "reachable again" in text


def test_start_with_redis_down_does_not_fail(redis_server):
    async def main():
        redis_server.stop()
        s = store_for(redis_server)
        await s.start()
        assert s.up is False
        assert (await s.take([rl.Bucket("x", 1, 1)]))[0] == UNAVAILABLE
        await s.close()
    asyncio.run(main())


REDIS_GW = """
state: {backend: redis, url: "%s", on_failure: %s, timeout: 200ms}
throttle: {enabled: false}
apis:
  shop:
    type: rest
    stages: {prod: {}}
    routes:
      - route: GET /a
        throttle: {rate: 1, burst: 2}
        integration: {type: mock, body: {ok: a}}
"""


@pytest.mark.parametrize("mode,down_status", [("open", 200), ("closed", 503)])
def test_gateway_on_failure_open_and_closed(make_gateway, redis_server, mode, down_status):
    g = make_gateway(REDIS_GW % (redis_server.url, mode))
    assert [g.call("GET", "/prod/a")[0] for _ in range(3)] == [200, 200, 429]
    redis_server.stop()
    statuses = [g.call("GET", "/prod/a")[0] for _ in range(5)]
    assert statuses == [down_status] * 5
    if mode == "closed":
        st, h, body, _ = g.call("GET", "/prod/a")
        assert json.loads(body) == {"message": "Service Unavailable"}
    stats = json.loads(g.admin("GET", "/throttle").body)
    assert stats["state_unavailable"] >= 5
    assert stats["state"]["up"] is False
    assert stats["state"]["failed_" + mode] >= 5
    redis_server.start()
    store = g.gw.services.state
    for _ in range(50):
        g.run(asyncio.sleep(0.1))
        if store.up:
            break
    assert store.up
    # a fresh Redis: the bucket starts full again and throttles again
    assert [g.call("GET", "/prod/a")[0] for _ in range(3)] == [200, 200, 429]
