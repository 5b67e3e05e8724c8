"""API keys (lifecycle step 4) and the admin API for keys, usage plans and usage.

Config::

    api_keys:
      alice: {sha256: <hex SHA-256 of the key>, enabled: true}
    usage_plans:
      gold: {stages: [shop/prod], keys: [alice], throttle: {rate: 50, burst: 100},
             quota: {limit: 10000, period: DAY}}
    apis: {shop: {routes: [{route: GET /pets, api_key_required: true, ...}]}}

A route with ``api_key_required: true`` needs, in ``x-api-key``, a key that is known,
enabled, and in a usage plan covering the route's ``api/stage`` (as in API Gateway, where
a key works only through a usage plan); otherwise 403 ``{"message": "Forbidden"}``. Only
SHA-256 digests are stored; the presented key is hashed and looked up by digest, then
compared with ``hmac.compare_digest`` (constant time). The lookup is keyed by the digest
of what the caller sent, so its timing tells nothing about any stored key. On success
``req.api_key`` is the key's name (the throttle stage applies its plan).

Enabling/disabling at run time (admin API) writes a flag to the state store
(``k:<name>:flag``: 1 disabled, 2 enabled; absent: the config's ``enabled``); every
worker (and, with Redis, every node) re-reads the flags every ``FLAG_REFRESH`` seconds,
and the worker serving the admin call applies it at once.

Admin endpoints (on ``server.admin``)::

    GET  /apikeys                      keys: name, enabled, plans
    GET  /apikeys/{name}
    POST /apikeys/{name}/enable        (or /disable)
    GET  /usageplans                   plans
    GET  /usageplans/{plan}
    GET  /usageplans/{plan}/usage?startDate=YYYY-MM-DD&endDate=YYYY-MM-DD[&keyId=name]
         like API Gateway's GetUsage: {"usagePlanId", "startDate", "endDate",
         "items": {key: [[used, remaining], ... one per day]}}; ``remaining`` is what is
         left of the quota for the period containing that day after that day's use.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from datetime import date, datetime, timedelta, timezone
from urllib.parse import parse_qs

import gwcore

from ..context import answered, gateway_response
from ..state import StoreUnavailable
from ..throttle import DAY_S, period_bounds, plans_by_stage, plans_from_config, usage_counter

__all__ = ["SERVICE_NAME", "build_service", "build_stage", "check", "admin_routes", "KeyRegistry",
           "digest"]

log = logging.getLogger("gwproxy.apikeys")
_rl = gwcore.load("ratelimit")

SERVICE_NAME = "apikeys"
FLAG_REFRESH = 0.5
FLAG_TTL = 10 * 365 * DAY_S
DISABLED, ENABLED = 1.0, 2.0
MAX_USAGE_DAYS = 90


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def check(cfg: dict, locator) -> list[str]:
    problems = []
    keys = cfg.get("api_keys") or {}
    seen: dict[tuple, str] = {}
    digests: dict[str, str] = {}
    for name, k in keys.items():
        d = (k or {}).get("sha256", "").lower()
        if d in digests:
            problems.append(locator.problem(("api_keys", name, "sha256"),
                                            f"same key as '{digests[d]}'"))
        digests[d] = name
    for pname, p in (cfg.get("usage_plans") or {}).items():
        for i, k in enumerate((p or {}).get("keys") or []):
            if k not in keys:
                problems.append(locator.problem(("usage_plans", pname, "keys", i),
                                                f"no API key named '{k}' in api_keys"))
            for st in (p or {}).get("stages") or []:
                other = seen.get((k, st))
                if other is not None and other != pname:
                    problems.append(locator.problem(
                        ("usage_plans", pname, "keys", i),
                        f"key '{k}' is already in plan '{other}' for stage '{st}' "
                        "(a key may be in one plan per stage)"))
                seen[(k, st)] = pname
    return problems


class KeyRegistry:
    """The keys of one gateway: digests, config flags, run-time overrides from the store."""

    def __init__(self, gateway):
        self.gateway = gateway
        cfg = gateway.cfg
        self.keys: dict[str, dict] = dict(cfg.get("api_keys") or {})
        self.by_digest: dict[bytes, str] = {}
        self.digest_of: dict[str, bytes] = {}
        for name, k in self.keys.items():
            d = bytes.fromhex(k["sha256"])
            self.by_digest[d] = name
            self.digest_of[name] = d
        self.config_enabled = {n: k.get("enabled", True) is not False for n, k in self.keys.items()}
        self.enabled: dict[str, bool] = dict(self.config_enabled)
        self.plans = plans_from_config(cfg)
        self.by_stage = plans_by_stage(self.plans)
        self._flags = {n: _rl.Counter(f"k:{n}:flag", 0, FLAG_TTL) for n in self.keys}
        self._task: asyncio.Task | None = None

    @property
    def store(self):
        return self.gateway.services.state

    def identify(self, presented: str | None) -> str | None:
        """The name of the enabled key ``presented`` is, or None."""
        if not presented:
            return None
        d = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        name = self.by_digest.get(d)
        if name is None or not hmac.compare_digest(self.digest_of[name], d):
            return None
        if not self.enabled.get(name, False):
            return None
        return name

    # -- run-time flags ------------------------------------------------------------------
    def _apply(self, values) -> None:
        for name, v in zip(self._flags, values):
            if v == DISABLED:
                self.enabled[name] = False
            elif v == ENABLED:
                self.enabled[name] = True
            else:
                self.enabled[name] = self.config_enabled[name]

    async def refresh(self) -> None:
        if not self._flags:
            return
        try:
            vals = await self.store.read(list(self._flags.values()))
        except StoreUnavailable:
            return
        self._apply(vals)

    async def set_enabled(self, name: str, on: bool) -> None:
        await self.store.write(self._flags[name], ENABLED if on else DISABLED)
        self.enabled[name] = on

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(FLAG_REFRESH)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the refresher die
                log.exception("api key flags refresh failed")

    async def start(self) -> None:
        if self._flags:
            await self.refresh()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def describe(self, name: str) -> dict:
        plans = [p.name for p in self.plans.values() if name in p.keys]
        stages = sorted({s for p in self.plans.values() if name in p.keys for s in p.stages})
        return {"name": name, "enabled": self.enabled[name],
                "config_enabled": self.config_enabled[name], "plans": plans, "stages": stages}


def build_service(gateway):
    return KeyRegistry(gateway)


def build_stage(rb):
    if not rb.route.get("api_key_required"):
        return None
    reg: KeyRegistry = rb.gateway.services.apikeys
    allowed = frozenset(reg.by_stage.get(f"{rb.api_name}/{rb.stage_name}") or ())
    identify = reg.identify

    def api_key(req, nxt):
        name = None
        for k, v in req.headers:
            if k == "x-api-key":
                name = identify(v)
                break
        if name is None or name not in allowed:
            return answered(gateway_response(403, "Forbidden"))
        req.api_key = name
        return nxt(req)
    api_key.passes_through = True
    return api_key


# ---------------------------------------------------------------- admin API

def _json(obj, status=200):
    from ..admin import json_response
    return json_response(obj, status)


def _parse_day(text: str) -> date:
    return datetime.strptime(text, "%Y-%m-%d").date()


def admin_routes(gateway):
    reg: KeyRegistry = gateway.services.apikeys

    async def list_keys(areq):
        return _json({"items": [reg.describe(n) for n in sorted(reg.keys)]})

    async def one_key(areq):
        parts = areq.path.rstrip("/").split("/")[2:]      # /apikeys/<name>[/enable|/disable]
        if not parts or parts[0] not in reg.keys:
            return gateway_response(404, "Not Found")
        name = parts[0]
        if len(parts) == 1 and areq.method == "GET":
            return _json(reg.describe(name))
        if len(parts) == 2 and areq.method == "POST" and parts[1] in ("enable", "disable"):
            try:
                await reg.set_enabled(name, parts[1] == "enable")
            except StoreUnavailable:
                return gateway_response(503, "Service Unavailable")
            log.info("api key %s %sd via the admin API", name, parts[1])
            return _json(reg.describe(name))
        return gateway_response(404, "Not Found")

    async def list_plans(areq):
        return _json({"items": [p.describe() for p in reg.plans.values()]})

    async def one_plan(areq):
        parts = areq.path.rstrip("/").split("/")[2:]
        if not parts or parts[0] not in reg.plans:
            return gateway_response(404, "Not Found")
        plan = reg.plans[parts[0]]
        if len(parts) == 1:
            return _json(plan.describe())
        if len(parts) == 2 and parts[1] == "usage":
            return await usage(plan, areq)
        return gateway_response(404, "Not Found")

    async def usage(plan, areq):
        q = {k: v[0] for k, v in parse_qs(areq.query).items()}
        wall = gateway.services.throttle.wall
        try:
            end = _parse_day(q["endDate"]) if "endDate" in q else datetime.fromtimestamp(wall(), timezone.utc).date()
            start = _parse_day(q["startDate"]) if "startDate" in q else end
        except ValueError:
            return gateway_response(400, "startDate and endDate are YYYY-MM-DD")
        ndays = (end - start).days + 1
        if ndays < 1 or ndays > MAX_USAGE_DAYS:
            return gateway_response(400, f"the range is 1 to {MAX_USAGE_DAYS} days")
        keys = [q["keyId"]] if "keyId" in q else list(plan.keys)
        if any(k not in plan.keys for k in keys):
            return gateway_response(404, "Not Found")
        days = [start + timedelta(days=i) for i in range(ndays)]
        # the quota period of the first day may start before it: read those days too
        first = days[0]
        if plan.quota:
            t0 = datetime(first.year, first.month, first.day, tzinfo=timezone.utc).timestamp()
            ps, _ = period_bounds(plan.quota["period"], plan.quota.get("offset", 0), t0)
            first = datetime.fromtimestamp(ps, timezone.utc).date()
        span = [first + timedelta(days=i) for i in range((end - first).days + 1)]
        items = [usage_counter(plan.name, k, d.isoformat()) for k in keys for d in span]
        try:
            vals = await reg.store.read(items)
        except StoreUnavailable:
            return gateway_response(503, "Service Unavailable")
        out = {}
        for ki, k in enumerate(keys):
            used_by_day = {d: int(vals[ki * len(span) + i]) for i, d in enumerate(span)}
            rows = []
            for d in days:
                used = used_by_day[d]
                if plan.quota:
                    t = datetime(d.year, d.month, d.day, tzinfo=timezone.utc).timestamp()
                    ps, _ = period_bounds(plan.quota["period"], plan.quota.get("offset", 0), t)
                    p0 = datetime.fromtimestamp(ps, timezone.utc).date()
                    so_far = sum(v for dd, v in used_by_day.items() if p0 <= dd <= d)
                    remaining = max(0, int(plan.quota["limit"]) - so_far)
                else:
                    remaining = None
                rows.append([used, remaining])
            out[k] = rows
        return _json({"usagePlanId": plan.name, "startDate": start.isoformat(),
                      "endDate": end.isoformat(), "position": None, "items": out})

    return [
        ("GET", "/apikeys", list_keys),
        ("GET", "/apikeys/*", one_key),
        ("POST", "/apikeys/*", one_key),
        ("GET", "/usageplans", list_plans),
        ("GET", "/usageplans/*", one_plan),
    ]
