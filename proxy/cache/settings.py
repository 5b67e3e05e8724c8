"""Config-time settings of one route's cache (built once, read per request)."""
from __future__ import annotations

import re

import gwcore

_ck = gwcore.load("cachekey")

__all__ = ["RouteCacheSettings", "route_settings", "DEFAULT_TTL", "DEFAULT_MAX_ENTRY",
           "DEFAULT_CAPACITY_MB", "INVALIDATE_TOKEN_HEADER"]

DEFAULT_TTL = 300
DEFAULT_MAX_ENTRY = 1024 * 1024
DEFAULT_CAPACITY_MB = 64
INVALIDATE_TOKEN_HEADER = "x-cache-invalidate-token"
_BODYLESS = frozenset(("GET", "HEAD"))
_PARAM = re.compile(r"\{([^}+]+)\+?\}")


class RouteCacheSettings:
    """What the cache stage of one route needs, decided at config time."""

    __slots__ = ("api", "stage", "route_key", "ttl", "methods", "spec", "shared", "statuses",
                 "max_entry", "hit_header", "keyed_body", "require_auth", "unauthorized",
                 "invalidators", "token_sha256", "needs_identity")

    def __init__(self, **kw):
        for k in self.__slots__:
            setattr(self, k, kw.get(k))


def _route_cache(rb) -> dict:
    return rb.route.get("cache") or {}


def _stage_cache(rb) -> dict:
    return rb.stage.get("cache") or {}


def route_settings(rb) -> RouteCacheSettings | None:
    """The settings of ``rb``'s route, or None when the route is not cached at all."""
    sc = _stage_cache(rb)
    rc = _route_cache(rb)
    enabled = rc.get("enabled")
    if enabled is None:
        enabled = bool(sc.get("enabled", False))
    if not enabled:
        return None
    ttl = rc.get("ttl")
    if ttl is None:
        ttl = sc.get("ttl", DEFAULT_TTL)
    if not ttl or ttl <= 0:
        return None
    methods = {m.upper() for m in (rc.get("methods") or ["GET"])}
    if "GET" in methods:
        methods.add("HEAD")           # HEAD is served from GET's entries
    if rb.method not in ("ANY", "$default"):
        methods &= {rb.method}
    if not methods:
        return None
    path_params, query, headers = [], [], []
    for item in rc.get("key") or ():
        kind, _, name = item.partition(".")
        {"path": path_params, "query": query, "header": headers}[kind].append(name)
    unkeyed = rc.get("unkeyed") or sc.get("unkeyed") or "bypass"
    route_key = rb.route_key
    api_cfg = rb.api or {}
    inv = api_cfg.get("cache_invalidation") or {}
    keys = (rb.gateway.cfg.get("api_keys") or {}) if rb.gateway is not None else {}
    invalidators = frozenset(n for n, k in keys.items()
                             if k.get("can_invalidate_cache") and k.get("enabled", True))
    # credentials are safe to leave out of the key only when the gateway itself turns
    # them into the identity that is keyed (or the route declares its answer shared);
    # otherwise a request carrying them may get a personalised answer: not cached
    allowed = (set(_ck.SAFE_HEADERS) - {"authorization", "x-api-key"}) | {INVALIDATE_TOKEN_HEADER}
    shared = bool(rc.get("shared", False))
    if shared or rb.route.get("api_key_required"):
        allowed.add("x-api-key")
    if shared or rb.route.get("authorizer"):
        allowed.add("authorization")
    hh = sc.get("hit_header", False)
    statuses = rc.get("statuses") or sc.get("statuses")
    return RouteCacheSettings(
        api=rb.api_name, stage=rb.stage_name, route_key=route_key, ttl=float(ttl),
        methods=frozenset(methods),
        spec=_ck.KeySpec(f"{rb.api_name}\0{rb.stage_name}\0{route_key}", path_params, query,
                         headers, strict=(unkeyed == "bypass"), allowed_headers=allowed),
        shared=shared,
        statuses=frozenset(statuses) if statuses else None,
        max_entry=int(sc.get("max_entry_bytes") or DEFAULT_MAX_ENTRY),
        hit_header=("x-cache" if hh is True else (hh.lower() if isinstance(hh, str) and hh else None)),
        keyed_body=bool(methods - _BODYLESS),
        require_auth=inv.get("require_authorization", True),
        unauthorized=inv.get("unauthorized", "ignore"),
        invalidators=invalidators,
        token_sha256=(inv.get("token_sha256") or "").lower() or None,
        needs_identity=bool(not shared and (rb.route.get("api_key_required") or rb.route.get("authorizer"))),
    )


def check(cfg: dict, locator) -> list[str]:
    """Key parameters that can never be present, TTLs on routes of uncached stages."""
    problems = []
    for api_name, api in (cfg.get("apis") or {}).items():
        for i, route in enumerate(api.get("routes") or []):
            rc = route.get("cache") or {}
            spec = route.get("route", "")
            _, _, path = spec.partition(" ")
            names = set(_PARAM.findall(path))
            for j, item in enumerate(rc.get("key") or ()):
                kind, _, name = item.partition(".")
                if kind == "path" and name not in names:
                    problems.append(locator.problem(
                        ("apis", api_name, "routes", i, "cache", "key", j),
                        f"'{item}': the route '{spec}' has no path parameter '{name}'"
                        + (f" (it has: {', '.join(sorted(names))})" if names else "")))
                if kind == "header" and name.lower() != name:
                    pass  # header names are compared lower-case; accepted as written
            methods = set(rc.get("methods") or ["GET"])
            rmethod = spec.split(" ", 1)[0] if spec != "$default" else "ANY"
            if rc.get("enabled") and rmethod not in ("ANY",) and rmethod not in methods \
                    and not (rmethod == "HEAD" and "GET" in methods):
                problems.append(locator.problem(
                    ("apis", api_name, "routes", i, "cache", "enabled"),
                    f"caching is enabled but the route's method {rmethod} is not in cache.methods "
                    f"{sorted(methods)}; add it to opt in"))
    return problems
