"""Resource policy (lifecycle step 3): source-address allow/deny lists and private endpoints.

Config (see config/schema.json):

    apis:
      internal:
        endpoint: private               # answer only clients from source_cidrs
        source_cidrs: [10.0.0.0/8]
        policy: {allow: [...], deny: [...]}    # on an API and/or on a route; deny wins
        routes:
          - route: GET /admin
            policy: {deny: [10.9.0.0/16]}

Every list that applies to a route (the private endpoint's ``source_cidrs``, the API's
policy, the route's policy) must let the client through; otherwise the answer is 403
``{"message": "Forbidden"}``. The client address is ``Request.client_ip``: the socket peer,
or the X-Forwarded-For hop resolved by the app through ``server.trusted_proxies`` only, so a
forged X-Forwarded-For from an untrusted peer changes nothing. A client without an IP
address (a unix-socket listener) matches no network.

All of it is decided at config time: a route with no list gets no stage (no cost); a route
with lists gets one stage holding integer network tables and a small per-address verdict
cache.
"""
from __future__ import annotations

import ipaddress

from .context import answered, gateway_response

__all__ = ["check", "build_stage", "api_gate", "NetworkSet", "route_rules"]

#: verdicts cached per stage; cleared whole when full (addresses seen in a burst are few)
_CACHE_MAX = 4096


class NetworkSet:
    """A set of IPv4/IPv6 networks answering ``contains(ip_text)`` with integer masks."""

    __slots__ = ("v4", "v6", "text")

    def __init__(self, cidrs):
        self.v4: list[tuple[int, int]] = []
        self.v6: list[tuple[int, int]] = []
        self.text = list(cidrs)
        for c in cidrs:
            net = ipaddress.ip_network(c, strict=False)
            pair = (int(net.network_address), int(net.netmask))
            (self.v4 if net.version == 4 else self.v6).append(pair)

    def __bool__(self) -> bool:
        return bool(self.v4 or self.v6)

    def contains_addr(self, addr) -> bool:
        if addr is None:
            return False
        a = int(addr)
        for net, mask in (self.v4 if addr.version == 4 else self.v6):
            if a & mask == net:
                return True
        return False


def parse_client(ip: str):
    """``ipaddress`` object of a client address (IPv4-mapped IPv6 -> IPv4), or None."""
    if not ip:
        return None
    try:
        a = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return None
    if a.version == 6 and a.ipv4_mapped is not None:
        return a.ipv4_mapped
    return a


class Rule:
    """One list: ``allow`` (empty means everyone) and ``deny``; deny wins."""

    __slots__ = ("allow", "deny", "what")

    def __init__(self, allow, deny, what: str):
        self.allow = NetworkSet(allow or [])
        self.deny = NetworkSet(deny or [])
        self.what = what

    def permits(self, addr) -> bool:
        if self.deny and self.deny.contains_addr(addr):
            return False
        if self.allow:
            return self.allow.contains_addr(addr)
        return True


def route_rules(api: dict, route: dict) -> list[Rule]:
    """The rules that apply to one route, in the order they are checked."""
    rules = []
    if api.get("endpoint") == "private":
        rules.append(Rule(api.get("source_cidrs") or [], [], "private endpoint"))
    pol = api.get("policy") or {}
    if pol.get("allow") or pol.get("deny"):
        rules.append(Rule(pol.get("allow"), pol.get("deny"), "api policy"))
    pol = route.get("policy") or {}
    if pol.get("allow") or pol.get("deny"):
        rules.append(Rule(pol.get("allow"), pol.get("deny"), "route policy"))
    return rules


def check(cfg: dict, locator) -> list[str]:
    problems = []
    for name, api in (cfg.get("apis") or {}).items():
        if api.get("endpoint") == "private" and not api.get("source_cidrs"):
            problems.append(locator.problem(
                ("apis", name, "endpoint"),
                "a private endpoint needs 'source_cidrs' (the networks allowed to call it); "
                "without them it would answer no one"))
        elif api.get("source_cidrs") and api.get("endpoint") != "private":
            problems.append(locator.problem(
                ("apis", name, "source_cidrs"),
                "'source_cidrs' applies to private endpoints only; set 'endpoint: private' "
                "or use 'policy: {allow: [...]}'"))
    return problems


def build_stage(rb):
    rules = route_rules(rb.api, rb.route)
    if not rules:
        return None
    allowed = _verdicts(rules)

    def resource_policy(req, nxt):
        if allowed(req.client_ip):
            return nxt(req)
        return answered(gateway_response(403, "Forbidden"))
    resource_policy.passes_through = True

    resource_policy.rules = tuple(rules)  # for tests and the admin summary
    return resource_policy


def api_gate(api: dict):
    """``allowed(client_ip)`` from the API-wide lists (private endpoint, API policy), or None
    when there are none. The app asks it before answering a path that matched no route, so
    a client the API refuses learns nothing about which routes exist (403 for every path,
    not 403/404 by route)."""
    rules = route_rules(api, {})
    return _verdicts(rules) if rules else None


def _verdicts(rules: list) -> "callable":
    """``allowed(ip)`` over ``rules``, with a small per-address verdict cache."""
    rules = tuple(rules)
    cache: dict[str, bool] = {}

    def decide(ip: str) -> bool:
        addr = parse_client(ip)
        for r in rules:
            if not r.permits(addr):
                return False
        return True

    def allowed(ip: str) -> bool:
        ok = cache.get(ip)
        if ok is None:
            ok = decide(ip)
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[ip] = ok
        return ok

    return allowed
