"""VPC links: named private backends with balancing, health, outlier ejection, retries and
circuit breaking.

    vpc_links:
      orders:
        targets: ["10.0.0.2:8080", {address: "10.0.0.3:8080", weight: 2}, "unix:/run/o.sock"]
        balance: round_robin            # or least_request (fewest in flight per weight)
        source_address: 10.0.0.1        # bind outgoing connections to this local address
        # source_interface: eth1        # ... or to this interface's IPv4 address
        private: true                   # (default) its targets may not be named in plain URIs
        health_check: {path: /health, interval: 10s, timeout: 2s,
                       healthy_threshold: 2, unhealthy_threshold: 3}
        outlier: {consecutive_failures: 5, base_ejection_time: 30s, max_ejection_percent: 10}
        retries: {attempts: 1, timeout: 5s}
        circuit_breaker: {max_requests: 1024, max_connections: 256, max_pending: 1024}

A route uses it with ``integration: {type: http_proxy, vpc_link: orders, uri:
"http://orders/{proxy}"}``: the URI's host is only the Host header; the address comes
from the link's targets, never from DNS.

Target states (per worker; ``GET /vpc_links`` on the admin listener shows them, and every
change is logged with its reason):

- *healthy*: in rotation;
- *unhealthy*: ``unhealthy_threshold`` active checks in a row failed; back after
  ``healthy_threshold`` passes;
- *ejected*: ``consecutive_failures`` requests in a row failed (connect failure, reset,
  protocol error, timeout, or a 5xx status); out for ``base_ejection_time`` x the number of
  times it was ejected (capped at max(base, 300 s)), then back on probation. At most
  ``max_ejection_percent`` of the targets (at least one when above 0) are ejected at once;
- *drained*: weight 0.

Retries (``Link.request``): after a failure, another try goes to another target if there is
one, when (a) nothing of the request was sent (connect failure, or a reset before writing),
for any method; or (b) the method is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) and
the body is not a one-shot stream, after a reset or a protocol error. Never after a timeout
(the integration timeout is what the client waits, in total), never for a 5xx status, and
never once a response was handed to the client. At most ``retries.attempts`` retries, none
starting later than ``retries.timeout`` after the first try, all within the integration
timeout.

Circuit breaking: a target with ``min(max_requests, max_connections + max_pending)``
requests in flight takes no more; when every target is full (or out), the answer is 503
``{"message": "Service Unavailable"}`` with ``Retry-After``.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import time
from urllib.parse import urlsplit

from ..context import gateway_response
from .balancer import make_balancer
from .errors import ConnectError, ProtocolError, ResetError, UpstreamError, UpstreamTimeout
from .health import HealthChecker, HealthSettings
from .pool import PoolSettings, UpstreamPool

log = logging.getLogger("gwproxy.vpc_link")

SERVICE_NAME = "links"

__all__ = ["SERVICE_NAME", "Links", "Link", "Target", "NoTarget", "check", "build_service",
           "admin_routes", "IDEMPOTENT"]

IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
MAX_EJECTION_TIME = 300.0

_monotonic = time.monotonic


class NoTarget(UpstreamError):
    """No target can take the request (all out, or all at their circuit-breaker limit): 503."""

    status = 503
    kind = "no_target"

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def service_unavailable(retry_after: int):
    return gateway_response(503, "Service Unavailable", [("retry-after", str(retry_after))])


def parse_target(address: str) -> tuple[str, int, str | None]:
    """'10.0.0.2:8080' -> ('10.0.0.2', 8080, None); 'unix:/run/x.sock' -> ('localhost', 0, path)."""
    if address.startswith("unix:"):
        return "localhost", 0, address[5:]
    if address.startswith("["):
        end = address.index("]")
        return address[1:end], int(address[end + 2:]), None
    host, _, port = address.rpartition(":")
    return host, int(port), None


def interface_address(name: str) -> str:
    """The IPv4 address of a local network interface (Linux SIOCGIFADDR). Raises OSError."""
    import fcntl
    import socket
    import struct
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        res = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
    return socket.inet_ntoa(res[20:24])


class Target:
    """One address of a link, with its pool and its state (per worker)."""

    __slots__ = ("address", "host", "port", "unix_path", "weight", "pool", "host_header",
                 "up", "outstanding", "limit",
                 "hc_healthy", "hc_passes", "hc_fails", "hc_reason", "hc_checked",
                 "fails", "last_error", "ejected", "ejected_until", "ejections", "returned_at",
                 "_eject_timer", "requests", "failures", "ejections_total")

    def __init__(self, spec: dict, pool: UpstreamPool, limit: int):
        self.address = spec["address"]
        self.host, self.port, self.unix_path = parse_target(self.address)
        self.weight = int(spec.get("weight", 1))
        self.pool = pool
        self.host_header = self.host if self.unix_path or self.port == 80 else (
            f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}")
        self.outstanding = 0
        self.limit = limit
        self.hc_healthy = True
        self.hc_passes = 0
        self.hc_fails = 0
        self.hc_reason = "not checked yet"
        self.hc_checked = False
        self.fails = 0              # consecutive failed requests
        self.last_error = ""
        self.ejected = False
        self.ejected_until = 0.0    # loop time
        self.ejections = 0          # multiplier of the next ejection time
        self.returned_at = 0.0
        self._eject_timer = None
        self.requests = 0
        self.failures = 0
        self.ejections_total = 0
        self._refresh()

    def _refresh(self) -> None:
        self.up = self.hc_healthy and not self.ejected and self.weight > 0

    def state(self) -> str:
        if self.weight <= 0:
            return "drained"
        if self.ejected:
            return "ejected"
        if not self.hc_healthy:
            return "unhealthy"
        return "healthy"


class Link:
    """A named set of targets and the policy for sending requests to them."""

    def __init__(self, name: str, cfg: dict, pool_options: dict):
        self.name = name
        self.cfg = cfg
        self.private = bool(cfg.get("private", True))
        src = cfg.get("source_address")
        self.source_interface = cfg.get("source_interface")
        if src is None and self.source_interface:
            src = interface_address(self.source_interface)
        self.source_address = src
        cb = cfg.get("circuit_breaker") or {}
        max_conn = int(cb.get("max_connections", pool_options.get("max_connections", 256)))
        limit = min(int(cb.get("max_requests", 1024)), max_conn + int(cb.get("max_pending", 1024)))
        self.limits = {"max_requests": int(cb.get("max_requests", 1024)), "max_connections": max_conn,
                       "max_pending": int(cb.get("max_pending", 1024))}
        opts = {k: pool_options[k] for k in ("idle_timeout", "connect_timeout", "max_idle") if k in pool_options}
        settings = PoolSettings(max_connections=max_conn, **opts)
        self.targets: list[Target] = []
        for spec in cfg["targets"]:
            host, port, unix_path = parse_target(spec["address"])
            pool = UpstreamPool(host, port, unix_path=unix_path, settings=settings,
                                source_address=(src, 0) if src and unix_path is None else None)
            self.targets.append(Target(spec, pool, limit))
        self.balance = cfg.get("balance", "round_robin")
        self.balancer = make_balancer(self.balance, self.targets)
        self.pick = self.balancer.pick
        out = cfg.get("outlier") or {}
        self.consecutive_failures = int(out.get("consecutive_failures", 5))
        self.base_ejection_time = float(out.get("base_ejection_time", 30.0))
        pct = int(out.get("max_ejection_percent", 10))
        n = sum(1 for t in self.targets if t.weight > 0)
        self.max_ejected = 0 if pct <= 0 or self.base_ejection_time <= 0 else max(1, n * pct // 100)
        self.n_ejected = 0
        r = cfg.get("retries") or {}
        self.retries = int(r.get("attempts", 1))
        self.retry_window = float(r["timeout"]) if r.get("timeout") is not None else None
        self.health = HealthSettings.from_config(cfg.get("health_check"))
        self.checker = HealthChecker(self, self.health) if self.health else None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the request ---------------------------------------------------------------
    async def request(self, method: str, target: str, headers: list, body, body_length, timeout: float,
                      picked: Target | None = None):
        """Send through a chosen target, retrying per the link's policy.

        Returns ``(response, target)``; the caller calls ``self.done(target)`` once the
        response is finished (read, or streamed and closed). Raises ``NoTarget`` (503) or
        the last ``UpstreamError``.
        """
        t = picked if picked is not None else self.pick(None)
        if t is None:
            raise NoTarget("no healthy target", self.retry_after())
        return await self._attempt(t, method, target, headers, body, body_length, timeout,
                                   _monotonic(), False)

    async def _attempt(self, t: Target, method, target, headers, body, body_length, timeout: float,
                       started: float, fresh: bool):
        """A try on ``t`` (``fresh``: on a new connection) and, if it fails, the retries."""
        try:
            left = timeout - (_monotonic() - started) if fresh else timeout
            return await self._send(t, method, target, headers, body, body_length, left, fresh), t
        except UpstreamError as e:
            return await self._after_failure(e, t, method, target, headers, body, body_length,
                                             started + timeout, started)

    async def _send(self, t: Target, method, target, headers, body, body_length, timeout,
                    fresh: bool = False):
        """One try on ``t``, with its in-flight count and outcome accounting. On success the
        target stays counted in flight until ``done(t)``; on failure it is released here."""
        t.outstanding += 1
        try:
            resp = await t.pool.request(method, target, headers, body, timeout=timeout,
                                        body_length=body_length, fresh=fresh)
        except BaseException:
            t.outstanding -= 1
            raise
        self._account(t, resp)
        return resp

    def _account(self, t: Target, resp) -> None:
        t.requests += 1
        if resp.status >= 500:
            self.failed(t, f"status {resp.status}")
        elif t.fails or t.ejections:
            self.succeeded(t)

    def begin(self, method: str, target: str, headers: list, timeout: float, cb, arg):
        """Callback mode for a request without a body (see ``UpstreamPool.start``), through a
        chosen target. Not sent when there is no target (None) or the one chosen has no idle
        connection (that target: pass it to :meth:`request` as ``picked``, so that a target
        without an idle connection is not skipped for ever). True when sent; then
        ``cb(arg, response, target, pending)`` is called once: with the response (the target
        counted in flight until ``done(target)``), or with ``pending``, the coroutine of what
        :meth:`request` does after that failure (the stale keep-alive retry, or the link's
        retries), giving ``(response, target)``."""
        t = self.pick(None)
        if t is None:
            return None
        if not t.pool.start(method, target, headers, timeout, self._answered,
                            (t, method, target, headers, timeout, _monotonic(), cb, arg)):
            return t
        t.outstanding += 1
        return True

    def _answered(self, st, resp, exc, retry: bool) -> None:
        t, method, target, headers, timeout, started, cb, arg = st
        if resp is not None:
            self._account(t, resp)
            cb(arg, resp, t, None)
            return
        t.outstanding -= 1
        if retry:   # a stale keep-alive connection: once more on a new one, as request() does
            pending = self._attempt(t, method, target, headers, None, None, timeout, started, True)
        else:
            pending = self._after_failure(exc, t, method, target, headers, None, None,
                                          started + timeout, started)
        cb(arg, None, t, pending)

    async def _after_failure(self, e, t, method, target, headers, body, body_length, deadline, started):
        window = self.retry_window
        streamed = body is not None and not isinstance(body, (bytes, bytearray, memoryview))
        tries = 0
        while True:
            t.requests += 1
            self.failed(t, _reason(e))
            if not self._retryable(e, method, streamed) or tries >= self.retries:
                raise e
            tries += 1
            now = _monotonic()
            if window is not None and now - started >= window:
                raise e
            left = deadline - now
            if left <= 0:
                raise e
            nt = self.pick(t) or self.pick(None)
            if nt is None:
                if isinstance(e, ConnectError):
                    raise NoTarget("no healthy target", self.retry_after())
                raise e
            t = nt
            try:
                return await self._send(t, method, target, headers, body, body_length, left), t
            except UpstreamError as e2:
                e = e2

    @staticmethod
    def _retryable(e: UpstreamError, method: str, streamed: bool) -> bool:
        if isinstance(e, UpstreamTimeout):
            return False
        if isinstance(e, ConnectError):
            return True
        if isinstance(e, ResetError):
            if not e.request_sent:
                return True
            return method in IDEMPOTENT and not streamed
        if isinstance(e, ProtocolError):
            return method in IDEMPOTENT and not streamed
        return False

    @staticmethod
    def done(t: Target) -> None:
        t.outstanding -= 1

    # -- passive health: outlier ejection ----------------------------------------------
    def succeeded(self, t: Target) -> None:
        t.fails = 0
        if t.ejections and not t.ejected:
            # the ejection multiplier decays by one per quiet base_ejection_time
            now = self._now()
            if now - t.returned_at >= self.base_ejection_time:
                t.ejections -= 1
                t.returned_at = now

    def failed(self, t: Target, reason: str) -> None:
        t.failures += 1
        t.fails += 1
        t.last_error = reason
        if (t.fails >= self.consecutive_failures and not t.ejected
                and self.n_ejected < self.max_ejected and t.weight > 0):
            self._eject(t)

    def _now(self) -> float:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop.time()

    def _eject(self, t: Target) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        t.ejections += 1
        t.ejections_total += 1
        duration = min(self.base_ejection_time * t.ejections, max(self.base_ejection_time, MAX_EJECTION_TIME))
        t.ejected = True
        t.ejected_until = loop.time() + duration
        t._refresh()
        self.n_ejected += 1
        t._eject_timer = loop.call_later(duration, self._return, t)
        log.warning("vpc_link %s: target %s ejected for %gs after %d consecutive failures (last: %s)",
                    self.name, t.address, duration, t.fails, t.last_error)

    def _return(self, t: Target) -> None:
        t._eject_timer = None
        if not t.ejected:
            return
        t.ejected = False
        t.fails = 0
        t.returned_at = self._now()
        self.n_ejected -= 1
        t._refresh()
        log.info("vpc_link %s: target %s back in rotation after ejection%s", self.name, t.address,
                 "" if t.hc_healthy else " (still failing health checks)")

    # -- active health --------------------------------------------------------------------
    def health_result(self, t: Target, ok: bool, reason: str) -> None:
        h = self.health
        t.hc_checked = True
        t.hc_reason = reason
        if ok:
            t.hc_fails = 0
            t.hc_passes += 1
            if not t.hc_healthy and t.hc_passes >= h.healthy_threshold:
                t.hc_healthy = True
                t._refresh()
                log.info("vpc_link %s: target %s healthy again (%s)", self.name, t.address, reason)
        else:
            t.hc_passes = 0
            t.hc_fails += 1
            if t.hc_healthy and t.hc_fails >= h.unhealthy_threshold:
                t.hc_healthy = False
                t._refresh()
                log.warning("vpc_link %s: target %s unhealthy after %d failed checks (%s)",
                            self.name, t.address, t.hc_fails, reason)

    def retry_after(self) -> int:
        """Seconds until a target may be back (at least 1)."""
        waits = []
        now = self._now()
        for t in self.targets:
            if t.weight <= 0:
                continue
            if t.ejected:
                waits.append(t.ejected_until - now)
            elif not t.hc_healthy and self.health is not None:
                waits.append(self.health.interval * self.health.healthy_threshold)
        if not waits:
            return 1
        return max(1, math.ceil(min(waits)))

    # -- lifecycle / admin ------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self.checker is not None:
            self.checker.start()

    async def close(self) -> None:
        if self.checker is not None:
            await self.checker.close()
        for t in self.targets:
            if t._eject_timer is not None:
                t._eject_timer.cancel()
                t._eject_timer = None
            try:
                await t.pool.close()
            except Exception:
                pass

    def describe(self) -> dict:
        now = self._now() if self._loop is not None else 0.0
        targets = []
        for t in self.targets:
            state = t.state()
            if state == "ejected":
                why = (f"ejected after {self.consecutive_failures} consecutive failures "
                       f"(last: {t.last_error}); back in {max(0.0, t.ejected_until - now):.1f}s")
            elif state == "unhealthy":
                why = t.hc_reason
            elif state == "drained":
                why = "weight 0"
            else:
                why = t.hc_reason if self.health is not None else "no active health check; passive ejection only"
            targets.append({
                "address": t.address, "weight": t.weight, "state": state, "reason": why,
                "in_flight": t.outstanding, "requests": t.requests, "failures": t.failures,
                "consecutive_failures": t.fails, "last_error": t.last_error or None,
                "ejections": t.ejections_total,
                "ejected_for": round(max(0.0, t.ejected_until - now), 3) if t.ejected else 0,
                "health_check": None if self.health is None else {
                    "healthy": t.hc_healthy, "passes_in_a_row": t.hc_passes,
                    "fails_in_a_row": t.hc_fails, "last": t.hc_reason},
                "pool": t.pool.stats(),
            })
        return {"balance": self.balance, "private": self.private,
                "source_address": self.source_address, "source_interface": self.source_interface,
                "healthy_targets": sum(1 for t in self.targets if t.up),
                "retries": {"attempts": self.retries, "timeout": self.retry_window},
                "outlier": {"consecutive_failures": self.consecutive_failures,
                            "base_ejection_time": self.base_ejection_time,
                            "max_ejected": self.max_ejected},
                "circuit_breaker": self.limits,
                "targets": targets}


def _reason(e: UpstreamError) -> str:
    if isinstance(e, UpstreamTimeout):
        return "timeout"
    text = str(e)
    return f"{e.kind}: {text}" if text and text != e.kind else e.kind


class Links:
    """The gateway-wide registry of links (``gateway.services.links``)."""

    def __init__(self, cfg: dict):
        links = cfg.get("vpc_links") or {}
        self.pool_options = dict(cfg.get("upstream") or {})
        self.cfg = links
        self._links: dict[str, Link] = {}

    def get(self, name: str) -> Link:
        link = self._links.get(name)
        if link is None:
            link = self._links[name] = Link(name, self.cfg[name], self.pool_options)
        return link

    def all(self) -> dict[str, Link]:
        for name in self.cfg:
            self.get(name)
        return self._links

    async def start(self) -> None:
        for link in self.all().values():
            await link.start()

    async def close(self) -> None:
        for link in list(self._links.values()):
            await link.close()


def build_service(gateway) -> Links:
    return Links(gateway.cfg)


def admin_routes(gateway) -> list:
    async def vpc_links(areq):
        from ..admin import json_response
        svc = getattr(areq.gateway.services, SERVICE_NAME, None)
        if svc is None:
            return json_response({})
        return json_response({name: link.describe() for name, link in svc.all().items()})
    return [("GET", "/vpc_links", vpc_links)]


# -- config checks ---------------------------------------------------------------------------
def _norm_host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return host.lower()


def check(cfg: dict, locator) -> list[str]:
    from ..integrations.http import substitute_stage_variables
    problems = []
    links = cfg.get("vpc_links") or {}
    private: dict[tuple[str, int], str] = {}
    for name, link in links.items():
        if not any(int(t.get("weight", 1)) > 0 for t in link.get("targets") or []):
            problems.append(locator.problem(("vpc_links", name, "targets"),
                                            "every target has weight 0; at least one needs weight > 0"))
        if link.get("source_interface"):
            if link.get("source_address"):
                problems.append(locator.problem(("vpc_links", name, "source_interface"),
                                                "give 'source_address' or 'source_interface', not both"))
            else:
                try:
                    interface_address(link["source_interface"])
                except OSError:
                    problems.append(locator.problem(
                        ("vpc_links", name, "source_interface"),
                        f"no network interface {link['source_interface']!r} with an IPv4 address on this machine"))
        if link.get("private", True):
            for t in link.get("targets") or []:
                host, port, unix_path = parse_target(t["address"])
                if unix_path is None:
                    private[(_norm_host(host), port)] = name
    for api_name, api in (cfg.get("apis") or {}).items():
        stages = api.get("stages") or {}
        variables = [st.get("variables") or {} for st in stages.values()] or [{}]
        for i, route in enumerate(api.get("routes") or []):
            integ = route.get("integration") or {}
            name = integ.get("vpc_link")
            where = ("apis", api_name, "routes", i, "integration")
            if name is not None:
                if integ.get("type") not in ("http_proxy", "http"):
                    problems.append(locator.problem(where + ("vpc_link",),
                                                    "'vpc_link' applies to http_proxy / http integrations only"))
                elif name not in links:
                    known = ", ".join(sorted(links)) or "none defined"
                    problems.append(locator.problem(where + ("vpc_link",),
                                                    f"no vpc_links entry named {name!r} (known: {known})"))
                continue
            if integ.get("type") not in ("http_proxy", "http") or not private:
                continue
            for v in variables:
                parts = urlsplit(substitute_stage_variables(integ.get("uri", ""), v))
                try:
                    key = (_norm_host(parts.hostname or ""), parts.port or 80)
                except ValueError:
                    break
                owner = private.get(key)
                if owner is not None:
                    problems.append(locator.problem(
                        where + ("uri",),
                        f"the URI names a target of private vpc_link {owner!r}; "
                        f"reach it with 'vpc_link: {owner}' (or set 'private: false' on the link)"))
                    break
    return problems
