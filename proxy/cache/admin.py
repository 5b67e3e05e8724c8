"""Admin endpoints of the cache (on the admin listener).

- ``GET /cache``: backend, per-stage size and per-route counters (this worker's view);
- ``DELETE /cache/{api}/{stage}``: flush a stage;
- ``DELETE /cache/{api}/{stage}?route=GET%20/pets/{id}``: flush one route of a stage.

With the memory backend and several workers, the admin listener runs in one worker and
flushes that worker's cache only; use Redis (shared) when flushes must reach every worker.
"""
from __future__ import annotations

from urllib.parse import parse_qs

from ..context import gateway_response

__all__ = ["routes"]


def _json(obj, status=200):
    from ..admin import json_response
    return json_response(obj, status)


def routes(gateway) -> list:
    svc = getattr(gateway.services, "cache", None)

    async def stats(areq):
        return _json(svc.snapshot())

    async def flush(areq):
        parts = [p for p in areq.path[len("/cache/"):].split("/") if p]
        if len(parts) != 2:
            return gateway_response(404, "Not Found: use /cache/{api}/{stage}")
        api, stage = parts
        if (api, stage) not in svc.stores:
            return gateway_response(404, f"no cache for stage {api}/{stage}")
        q = parse_qs(areq.query or "", keep_blank_values=True)
        route = None
        if "route" in q:
            route = q["route"][0]
            if route not in svc.route_keys.get((api, stage), ()):
                return gateway_response(404, f"no cached route '{route}' in {api}/{stage}")
        try:
            n = await svc.flush(api, stage, route)
        except Exception:
            return gateway_response(503, "cache backend unavailable")
        return _json({"flushed": n, "api": api, "stage": stage, "route": route})

    return [("GET", "/cache", stats), ("DELETE", "/cache/*", flush)]
