"""Throttling and quotas (lifecycle step 5): token buckets, most specific first.

Levels, in the order a request meets them (the first that refuses answers):

1. the caller's usage plan (routes with ``api_key_required``; ``req.api_key`` was set by
   ``proxy.auth.apikeys``): the plan's per-key bucket, or its ``route_throttle`` override
   for this route (the override replaces the plan bucket on that route), then the plan's
   quota (DAY, WEEK or MONTH, UTC, with an offset: WEEK 0 = Sunday, MONTH 0 = the 1st);
2. the route (``routes[].throttle``, one bucket per api/stage/route);
3. the stage (``stages.<name>.throttle``, one bucket per api/stage);
4. the account (top-level ``throttle``; default 10,000 requests/s, burst 5,000;
   ``throttle: {enabled: false}`` turns it off).

Each level may also carry ``per_client: {rate, burst, key: client|peer}`` (beyond AWS):
one bucket per client address at that level, checked just before the level's own
bucket. ``client`` is ``Request.client_ip`` (the socket peer, or the X-Forwarded-For hop
resolved through ``server.trusted_proxies`` only); ``peer`` is the socket peer. A raw
X-Forwarded-For is never used.

A decision is atomic and all or nothing (``proxy.state``): a refused request takes no
token from any level and counts toward no quota. Answers: throttled, 429
``{"message": "Too Many Requests"}`` with ``Retry-After`` (seconds until the refusing
bucket has a token); quota exhausted, 429 ``{"message": "Limit Exceeded"}`` with
``Retry-After`` (seconds until the period ends). When the Redis store is unreachable,
``state.on_failure: open`` lets the request through and ``closed`` answers 503
``{"message": "Service Unavailable"}``.

Everything is decided at config time: a route with no level gets no stage; a route
without plans or per-client limits does one table operation per request with a list of
buckets built once. Accepted requests with an API key are also counted per key per day
(``u:<plan>:<key>:<YYYY-MM-DD>``) for the admin usage report (``proxy.auth.apikeys``).
"""
from __future__ import annotations

import logging
import math
import time
from datetime import datetime, timedelta, timezone

import gwcore

from .context import answered, gateway_response
from .state import UNAVAILABLE

__all__ = ["SERVICE_NAME", "build_service", "build_stage", "check", "admin_routes",
           "period_bounds", "Plan", "plans_from_config", "usage_counter", "day_of"]

log = logging.getLogger("gwproxy.throttle")
_rl = gwcore.load("ratelimit")

SERVICE_NAME = "throttle"
DEFAULT_ACCOUNT = {"rate": 10000, "burst": 5000}
MAX_RETRY_AFTER = 32 * 86400   # a MONTH quota may be a month away
_CACHE_MAX = 10000
DAY_S = 86400.0
USAGE_TTL_MEMORY = 35 * DAY_S
USAGE_TTL_REDIS = 90 * DAY_S

_WEEK_OFFSETS = range(0, 7)
_MONTH_OFFSETS = range(0, 28)


# ---------------------------------------------------------------- quota periods (UTC)

def period_bounds(period: str, offset: int, t: float) -> tuple[float, float]:
    """(start, end) epoch seconds of the quota period containing ``t``.

    DAY: midnight UTC (offset 0). WEEK: ``offset`` = first weekday, 0 = Sunday ... 6 =
    Saturday. MONTH: ``offset`` = first day of the period, 0 = the 1st ... 27 = the 28th.
    """
    d = datetime.fromtimestamp(t, timezone.utc)
    midnight = d.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "DAY":
        start = midnight
        end = start + timedelta(days=1)
    elif period == "WEEK":
        since = (d.weekday() + 1 - offset) % 7       # weekday(): Monday 0 ... Sunday 6
        start = midnight - timedelta(days=since)
        end = start + timedelta(days=7)
    elif period == "MONTH":
        day = offset + 1
        y, m = d.year, d.month
        if d.day < day:
            y, m = (y - 1, 12) if m == 1 else (y, m - 1)
        start = datetime(y, m, day, tzinfo=timezone.utc)
        ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
        end = datetime(ny, nm, day, tzinfo=timezone.utc)
    else:
        raise ValueError(f"unknown quota period {period!r}")
    return start.timestamp(), end.timestamp()


def day_of(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


def usage_counter(plan: str, key: str, day: str, ttl: float = USAGE_TTL_REDIS):
    return _rl.Counter(f"u:{plan}:{key}:{day}", 0, ttl)


def quota_counter(plan: str, key: str, start: float, limit: float, ttl: float):
    return _rl.Counter(f"q:{plan}:{key}:{int(start)}", limit, ttl)


# ---------------------------------------------------------------- plans (config time)

class Plan:
    """A usage plan as the gateway uses it."""

    __slots__ = ("name", "stages", "throttle", "quota", "keys", "route_throttle")

    def __init__(self, name: str, cfg: dict):
        self.name = name
        self.stages = list(cfg.get("stages") or [])
        self.throttle = cfg.get("throttle")
        self.quota = cfg.get("quota")
        self.keys = list(cfg.get("keys") or [])
        self.route_throttle = dict(cfg.get("route_throttle") or {})

    def describe(self) -> dict:
        return {"name": self.name, "stages": self.stages, "throttle": self.throttle,
                "quota": self.quota, "keys": self.keys, "route_throttle": self.route_throttle}


def plans_from_config(cfg: dict) -> dict[str, Plan]:
    return {n: Plan(n, p or {}) for n, p in (cfg.get("usage_plans") or {}).items()}


def plans_by_stage(plans: dict[str, Plan]) -> dict[str, dict[str, Plan]]:
    """{"api/stage": {key name: plan}}"""
    out: dict[str, dict[str, Plan]] = {}
    for p in plans.values():
        for st in p.stages:
            m = out.setdefault(st, {})
            for k in p.keys:
                m.setdefault(k, p)
    return out


# ---------------------------------------------------------------- checks

def _enabled(t) -> bool:
    return bool(t) and t.get("enabled", True) is not False


def check(cfg: dict, locator) -> list[str]:
    problems = []
    apis = cfg.get("apis") or {}
    for name, p in (cfg.get("usage_plans") or {}).items():
        p = p or {}
        q = p.get("quota")
        where = ("usage_plans", name, "quota", "offset")
        if q:
            off = q.get("offset", 0)
            if q.get("period") == "DAY" and off != 0:
                problems.append(locator.problem(where, "a DAY quota has offset 0"))
            if q.get("period") == "WEEK" and off not in _WEEK_OFFSETS:
                problems.append(locator.problem(where, "a WEEK offset is 0 (Sunday) to 6 (Saturday)"))
            if q.get("period") == "MONTH" and off not in _MONTH_OFFSETS:
                problems.append(locator.problem(where, "a MONTH offset is 0 (the 1st) to 27 (the 28th)"))
        routes = set()
        for i, st in enumerate(p.get("stages") or []):
            api, _, stage = st.partition("/")
            a = apis.get(api)
            if a is None:
                problems.append(locator.problem(("usage_plans", name, "stages", i),
                                                f"no API named '{api}'"))
                continue
            stages = a.get("stages") or ({"$default": {}} if a.get("type") == "http" else {})
            if stage not in stages:
                problems.append(locator.problem(("usage_plans", name, "stages", i),
                                                f"API '{api}' has no stage '{stage}'"))
            routes.update(r.get("route") for r in a.get("routes") or [])
        for rk in p.get("route_throttle") or {}:
            if rk not in routes:
                problems.append(locator.problem(("usage_plans", name, "route_throttle", rk),
                                                f"no route '{rk}' in this plan's stages"))
    return problems


# ---------------------------------------------------------------- the service

class ThrottleService:
    """Config-time view shared by the stages of one gateway: store, plans, wall clock.

    ``wall`` (epoch seconds) decides quota periods and usage days; tests replace it.
    """

    def __init__(self, gateway):
        self.gateway = gateway
        self.wall = time.time
        self.plans = plans_from_config(gateway.cfg)
        self.by_stage = plans_by_stage(self.plans)
        self.throttled = 0
        self.quota_exceeded = 0
        self.unavailable = 0

    @property
    def store(self):
        return self.gateway.services.state

    def usage_ttl(self) -> float:
        return USAGE_TTL_MEMORY if self.store.local else USAGE_TTL_REDIS

    def stats(self) -> dict:
        return {"throttled": self.throttled, "quota_exceeded": self.quota_exceeded,
                "state_unavailable": self.unavailable, "state": self.store.stats()}


def build_service(gateway):
    return ThrottleService(gateway)


def admin_routes(gateway):
    from .admin import json_response

    async def throttle_stats(areq):
        return json_response(gateway.services.throttle.stats())
    return [("GET", "/throttle", throttle_stats)]


# ---------------------------------------------------------------- answers

def _retry_after(wait: float) -> str:
    if wait != wait or wait == math.inf:
        return "60"
    return str(min(MAX_RETRY_AFTER, max(1, math.ceil(wait))))


def too_many(wait: float):
    return gateway_response(429, "Too Many Requests", [("retry-after", _retry_after(wait))])


def limit_exceeded(wait: float):
    return gateway_response(429, "Limit Exceeded", [("retry-after", _retry_after(wait))])


def unavailable():
    return gateway_response(503, "Service Unavailable", [("retry-after", "1")])


# ---------------------------------------------------------------- per-route stage

class _PlanState:
    """Per (plan, key) handles for one route: bucket, quota and usage counters."""

    __slots__ = ("bucket", "period_end", "counters", "day_end", "quota_start")

    def __init__(self, bucket):
        self.bucket = bucket
        self.period_end = -1.0
        self.day_end = -1.0
        self.quota_start = 0.0
        self.counters: list = []


class _PlanRoute:
    """What a plan does on one route (config time)."""

    __slots__ = ("plan", "rate", "burst", "bucket_prefix", "quota", "states")

    def __init__(self, plan: Plan, api_stage: str, route_key: str):
        self.plan = plan
        override = plan.route_throttle.get(route_key)
        if override is not None:
            t = override
            self.bucket_prefix = f"p:{plan.name}:{{}}:{api_stage}:{route_key}"
        else:
            t = plan.throttle
            self.bucket_prefix = f"p:{plan.name}:{{}}"
        if _enabled(t):
            self.rate, self.burst = float(t["rate"]), float(t["burst"])
        else:
            self.rate = self.burst = None
        self.quota = plan.quota
        self.states: dict[str, _PlanState] = {}

    def state(self, key: str) -> _PlanState:
        st = self.states.get(key)
        if st is None:
            if len(self.states) > _CACHE_MAX:
                self.states.clear()
            b = None
            if self.rate is not None:
                b = _rl.Bucket(self.bucket_prefix.format(key), self.rate, self.burst)
            st = self.states[key] = _PlanState(b)
        return st


def _level(t, level_id: str):
    """(shared bucket or None, per-client spec or None) for a throttle setting."""
    if not _enabled(t):
        return None, None
    shared = None
    if "rate" in t and "burst" in t:
        shared = _rl.Bucket(level_id, t["rate"], t["burst"])
    pc = t.get("per_client")
    client = None
    if pc:
        client = (f"ip:{level_id}:", float(pc["rate"]), float(pc["burst"]),
                  pc.get("key", "client") == "peer", {})
    return shared, client


def _client_bucket(spec, req):
    prefix, rate, burst, peer, cache = spec
    ip = req.peer_ip if peer else req.client_ip
    b = cache.get(ip)
    if b is None:
        if len(cache) > _CACHE_MAX:
            cache.clear()
        b = cache[ip] = _rl.Bucket(prefix + (ip or "-"), rate, burst)
    return b


def build_stage(rb):
    gw = rb.gateway
    svc: ThrottleService = gw.services.throttle
    api_stage = f"{rb.api_name}/{rb.stage_name}"
    levels = [
        _level(rb.route.get("throttle"), f"r:{api_stage}:{rb.route_key}"),
        _level(rb.stage.get("throttle"), f"s:{api_stage}"),
        _level(gw.cfg.get("throttle", DEFAULT_ACCOUNT), "a"),
    ]
    plans = None
    if rb.route.get("api_key_required"):
        keyplans = svc.by_stage.get(api_stage) or {}
        routes: dict[str, _PlanRoute] = {}
        for key, plan in keyplans.items():
            pr = routes.get(plan.name)
            if pr is None:
                pr = routes[plan.name] = _PlanRoute(plan, api_stage, rb.route_key)
            plans = plans or {}
            plans[key] = pr      # even without throttle or quota: usage is counted
    static = [shared for shared, _ in levels if shared is not None]
    dynamic = any(client is not None for _, client in levels)
    if not static and not dynamic and not plans:
        return None
    if dynamic:
        template = []
        for shared, client in levels:
            if client is not None:
                template.append(client)
            if shared is not None:
                template.append(shared)
    else:
        template = static
    store_local = svc.store.local

    def decide_args(req):
        """(buckets, counters, at, quota_end) for this request."""
        if dynamic:
            buckets = [_client_bucket(x, req) if type(x) is tuple else x for x in template]
        else:
            buckets = template
        key = req.api_key
        pr = plans.get(key) if (plans and key is not None) else None
        if pr is None:
            return buckets, None, -1, 0.0
        st = pr.state(key)
        now = svc.wall()
        if now >= st.day_end or (pr.quota and now >= st.period_end):
            _refresh(svc, pr, st, key, now)
        head = [st.bucket] if st.bucket is not None else []
        return head + buckets, st.counters, len(head), st.period_end

    async def answer(req, nxt, failed, wait, buckets, counters, quota_end):
        if failed == UNAVAILABLE:
            svc.unavailable += 1
            store = svc.store
            count = getattr(store, "count_failure", None)
            if count is not None:
                count()
            if store.on_failure == "open":
                return await nxt(req)
            return unavailable()
        if failed >= len(buckets):
            svc.quota_exceeded += 1
            return limit_exceeded(quota_end - svc.wall())
        svc.throttled += 1
        return too_many(wait)

    if store_local and not dynamic and not plans:
        take_now = svc.store.take_now
        buckets = static

        # plain functions returning the next stage's coroutine (or a finished one): no
        # coroutine of their own on the way through
        def throttle(req, nxt):
            failed, wait = take_now(buckets)
            if failed < 0:
                return nxt(req)
            svc.throttled += 1
            return answered(too_many(wait))
        throttle.passes_through = True
        # a forwarding lane (gwcore.lane) asks without a Request; a refusal goes back to
        # the app's path, which takes again and answers 429 (a refused take costs nothing)
        throttle.lane_check = _rl.Check(svc.store, buckets)
    elif store_local:
        take_now = svc.store.take_now

        def throttle(req, nxt):
            buckets, counters, at, qend = decide_args(req)
            failed, wait = take_now(buckets, counters, 1.0, at)
            if failed < 0:
                return nxt(req)
            # a local store always decides (never UNAVAILABLE): answer() does not call nxt
            return answer(req, nxt, failed, wait, buckets, counters, qend)
        throttle.passes_through = True
    else:
        store = svc.store

        async def throttle(req, nxt):
            buckets, counters, at, qend = decide_args(req)
            failed, wait = await store.take(buckets, counters, 1.0, at)
            if failed == -1:
                return await nxt(req)
            return await answer(req, nxt, failed, wait, buckets, counters, qend)
    return throttle


def _refresh(svc: ThrottleService, pr: _PlanRoute, st: _PlanState, key: str, now: float) -> None:
    """New period / new day: new counter handles (their keys carry the period and day)."""
    counters = []
    if pr.quota:
        start, end = period_bounds(pr.quota["period"], pr.quota.get("offset", 0), now)
        st.period_end = end
        st.quota_start = start
        counters.append(quota_counter(pr.plan.name, key, start, pr.quota["limit"],
                                      end - now + 3600.0))
    d0 = math.floor(now / DAY_S) * DAY_S
    st.day_end = d0 + DAY_S
    counters.append(usage_counter(pr.plan.name, key, day_of(now), svc.usage_ttl()))
    st.counters = counters
