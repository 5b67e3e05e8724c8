"""The shared store: entries in a real Redis, TTL enforced by Redis (``SET ... PX``).

Used when ``state.backend: redis``: every gateway node (and every worker) sees the same
entries. The client is our own redis-py asyncio client built from ``state`` (``url``,
``timeout``), created lazily in each worker's event loop.

Keys: ``gwproxy:cache:<stage id>:<route id>:<digest>`` (ids are xxh3-64 hex of
"api\\0stage" and of the route key), so the admin flush of a stage or a route is a SCAN
over a prefix. Values carry the full canonical key, checked on every hit.

Limits: the max entry size is enforced exactly as in memory; the total size is Redis's
business (``maxmemory`` with an ``allkeys-lru`` / ``volatile-lru`` policy), since
``capacity_mb`` cannot be enforced across nodes without a round trip per store. Request
coalescing is per worker (concurrent misses on different nodes each fetch once).

The cache is an optimisation, never a dependency: when Redis is slow or unreachable the
request is served by the integration as a miss (whatever ``state.on_failure`` says, which
is about throttling), the failure is logged at most once a second and counted, and Redis
is not asked again for one second.
"""
from __future__ import annotations

import logging
import time

from .entry import decode, encode

log = logging.getLogger("gwproxy.cache")

__all__ = ["RedisCache", "RedisStore", "PREFIX"]

PREFIX = b"gwproxy:cache:"
_RETRY_AFTER = 1.0
_INF = float("inf")


class RedisCache:
    """One redis-py asyncio client per worker, shared by all stages' RedisStores."""

    def __init__(self, state: dict):
        self.url = state.get("url") or "redis://127.0.0.1:6379/0"
        t = state.get("timeout")
        self.timeout = float(t) if t else 0.5
        self._client = None
        self._down_until = 0.0
        self._last_log = 0.0
        self.errors = 0

    @property
    def client(self):
        if self._client is None:
            import redis.asyncio as aioredis
            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                health_check_interval=30)
        return self._client

    def available(self) -> bool:
        return self._down_until == 0.0 or time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        now = time.monotonic()
        self._down_until = now + _RETRY_AFTER
        if now - self._last_log >= 1.0:
            self._last_log = now
            log.warning("cache: redis unavailable (%s); serving without the cache",
                        type(exc).__name__)

    async def close(self) -> None:
        if self._client is not None:
            c, self._client = self._client, None
            try:
                await c.aclose()
            except AttributeError:  # redis-py < 5.0.1
                await c.close()


class RedisStore:
    """The entries of one stage in Redis (same interface as MemoryStore, but async)."""

    sync = False

    def __init__(self, rc: RedisCache, stage_id: str, capacity: int):
        self.rc = rc
        self.prefix = PREFIX + stage_id.encode() + b":"
        self.capacity = capacity

    async def get(self, key: bytes):
        rc = self.rc
        if not rc.available():
            return None
        try:
            data = await rc.client.get(key)
        except Exception as e:  # redis.RedisError, OSError, timeouts
            rc.failed(e)
            return None
        if data is None:
            return None
        try:
            return decode(data, _INF)
        except Exception:
            return None

    async def put(self, key: bytes, entry, ttl: float) -> bool:
        rc = self.rc
        if not rc.available():
            return False
        try:
            await rc.client.set(key, encode(entry), px=max(1, int(ttl * 1000)))
            return True
        except Exception as e:
            rc.failed(e)
            return False

    async def flush(self, route_prefix: bytes | None = None) -> int:
        pattern = (route_prefix or self.prefix) + b"*"
        client = self.rc.client
        n = 0
        batch = []
        async for k in client.scan_iter(match=pattern, count=1000):
            batch.append(k)
            if len(batch) >= 500:
                n += await client.unlink(*batch)
                batch = []
        if batch:
            n += await client.unlink(*batch)
        return n

    async def stats(self) -> dict:
        return {"backend": "redis", "errors": self.rc.errors}
