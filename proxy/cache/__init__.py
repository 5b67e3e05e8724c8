"""Response caching (lifecycle step 7): see ``proxy.cache.stage`` for the per-request
flow, ``gwcore.cachekey`` for the key, ``memory`` / ``redis_store`` for the stores.

Feature hooks (``proxy.pipeline``): ``check``, ``build_service`` (``SERVICE_NAME =
"cache"``), ``build_stage`` (None for routes that are not cached) and ``admin_routes``.
"""
from __future__ import annotations

from . import admin as _admin
from .service import CacheService
from .settings import check as _check
from .settings import route_settings
from .stage import CacheStage

SERVICE_NAME = "cache"

__all__ = ["SERVICE_NAME", "check", "build_service", "build_stage", "admin_routes"]


def check(cfg: dict, locator) -> list[str]:
    return _check(cfg, locator)


def build_service(gateway) -> CacheService:
    return CacheService(gateway)


def build_stage(rb):
    s = route_settings(rb)
    if s is None:
        return None
    svc = getattr(rb.gateway.services, SERVICE_NAME, None)
    if svc is None:
        svc = CacheService(rb.gateway)
        setattr(rb.gateway.services, SERVICE_NAME, svc)
    store = svc.store_for(rb.api_name, rb.stage_name, rb.stage)
    return CacheStage(s, store, svc.key_prefix(rb.api_name, rb.stage_name, s.route_key),
                      svc.inflight, svc.route_stats(rb.api_name, rb.stage_name, s.route_key))


def admin_routes(gateway) -> list:
    if getattr(gateway.services, SERVICE_NAME, None) is None:
        return []
    return _admin.routes(gateway)
