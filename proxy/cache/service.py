"""The gateway-wide cache service: one store per stage, the in-flight table for request
coalescing, and the counters. Built per worker (``build_service`` runs in each worker),
so the memory stores and coalescing are per worker; with Redis the entries are shared."""
from __future__ import annotations

import xxhash

from .memory import MemoryStore
from .redis_store import RedisCache, RedisStore
from .settings import DEFAULT_CAPACITY_MB
from .stage import RouteStats

__all__ = ["CacheService", "stage_id", "route_id"]


def stage_id(api: str, stage: str) -> str:
    return xxhash.xxh3_64_hexdigest(f"{api}\0{stage}".encode())


def route_id(route_key: str) -> str:
    return xxhash.xxh3_64_hexdigest(route_key.encode())


class CacheService:
    def __init__(self, gateway):
        cfg = gateway.cfg if gateway is not None else {}
        state = cfg.get("state") or {}
        self.redis = RedisCache(state) if state.get("backend") == "redis" else None
        self.stores: dict = {}        # (api, stage) -> MemoryStore | RedisStore
        self.inflight: dict = {}      # store key -> Future[Entry | None]
        self.routes: dict = {}        # (api, stage, route_key) -> RouteStats
        self.route_keys: dict = {}    # (api, stage) -> {route_key}

    @property
    def backend(self) -> str:
        return "redis" if self.redis is not None else "memory"

    def store_for(self, api: str, stage: str, stage_cfg: dict):
        k = (api, stage)
        st = self.stores.get(k)
        if st is None:
            mb = (stage_cfg.get("cache") or {}).get("capacity_mb") or DEFAULT_CAPACITY_MB
            cap = int(mb * 1024 * 1024)
            st = RedisStore(self.redis, stage_id(api, stage), cap) if self.redis else MemoryStore(cap)
            self.stores[k] = st
        return st

    def key_prefix(self, api: str, stage: str, route_key: str) -> bytes:
        st = self.stores[(api, stage)]
        if isinstance(st, RedisStore):
            return st.prefix + route_id(route_key).encode() + b":"
        return b""

    def route_stats(self, api: str, stage: str, route_key: str) -> RouteStats:
        k = (api, stage, route_key)
        rs = self.routes.get(k)
        if rs is None:
            rs = self.routes[k] = RouteStats()
            self.route_keys.setdefault((api, stage), set()).add(route_key)
        return rs

    async def flush(self, api: str, stage: str, route_key: str | None = None) -> int:
        st = self.stores.get((api, stage))
        if st is None:
            return 0
        if isinstance(st, RedisStore):
            prefix = None if route_key is None else self.key_prefix(api, stage, route_key)
            return await st.flush(prefix)
        return st.flush(route_key)

    def snapshot(self) -> dict:
        out: dict = {"backend": self.backend, "stages": {}}
        for (api, stage), st in self.stores.items():
            d = {"routes": {rk: self.routes[(api, stage, rk)].as_dict()
                            for rk in sorted(self.route_keys.get((api, stage), ()))}}
            if isinstance(st, MemoryStore):
                d.update(st.stats())
            out["stages"][f"{api}/{stage}"] = d
        if self.redis is not None:
            out["redis_errors"] = self.redis.errors
        return out

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.close()
