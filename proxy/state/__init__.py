"""The state store service (``gateway.services.state``): memory or Redis.

``state: {backend: memory}`` (default) or ``{backend: redis, url: redis://..., on_failure:
open|closed, timeout: 250ms, prefix: "gwproxy:"}``. The interface is documented in
``proxy.state.base``; the memory store in ``proxy.state.memory``, Redis in
``proxy.state.redisstore``.
"""
from __future__ import annotations

from .base import UNAVAILABLE, Store, StoreUnavailable

__all__ = ["UNAVAILABLE", "Store", "StoreUnavailable", "make_store", "build_service",
           "SERVICE_NAME", "admin_routes"]

SERVICE_NAME = "state"


def make_store(state_cfg: dict | None):
    state_cfg = state_cfg or {}
    if state_cfg.get("backend", "memory") == "redis":
        from .redisstore import RedisStore
        return RedisStore(state_cfg)
    from .memory import MemoryStore
    return MemoryStore(state_cfg)


def build_service(gateway):
    return make_store(gateway.cfg.get("state"))


def check(cfg, locator) -> list[str]:
    st = cfg.get("state") or {}
    if st.get("backend") == "redis":
        try:
            import redis  # noqa: F401
        except ImportError:
            return [locator.problem(("state", "backend"),
                                    "backend 'redis' needs the 'redis' package (pip install 'redis[hiredis]')")]
    return []


def admin_routes(gateway):
    from ..admin import json_response

    async def state(areq):
        return json_response(gateway.services.state.stats())
    return [("GET", "/state", state)]
