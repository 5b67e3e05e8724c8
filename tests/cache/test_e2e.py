"""End to end: a real `gwproxy serve` with caching in front of a counting upstream."""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import GatewayProcess

from .upstream import CountingUpstream

pytestmark = pytest.mark.slow

KEYS = {"alice": "alice-key-value", "bob": "bob-key-value", "ops": "ops-key-value"}
TOKEN = "flush-token-for-tests"


def _config(port: int, state: str = "", extra_stage: str = "") -> str:
    keys = "\n".join(
        f"  {n}: {{sha256: {hashlib.sha256(v.encode()).hexdigest()}"
        f"{', can_invalidate_cache: true' if n == 'ops' else ''}}}" for n, v in KEYS.items())
    up = f"http://127.0.0.1:{port}"
    return f"""
{state}
api_keys:
{keys}
apis:
  shop:
    type: rest
    cache_invalidation: {{token_sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}}}
    stages:
      prod:
        cache: {{enabled: true, ttl: 60, hit_header: true{extra_stage}}}
    routes:
      - route: GET /reflect
        integration: {{type: http_proxy, uri: "{up}/reflect"}}
      - route: GET /odd
        integration: {{type: http_proxy, uri: "{up}/odd"}}
        cache: {{unkeyed: ignore}}
      - route: GET /slow
        integration: {{type: http_proxy, uri: "{up}/slow"}}
      - route: GET /who
        api_key_required: true
        integration: {{type: http_proxy, uri: "{up}/who"}}
      - route: GET /pets/{{id}}
        integration: {{type: http_proxy, uri: "{up}/pets/{{id}}"}}
        cache: {{key: [query.lang]}}
      - route: GET /nocache
        integration: {{type: http_proxy, uri: "{up}/nocache"}}
        cache: {{enabled: false}}
"""


@pytest.fixture(scope="module")
def upstream():
    with CountingUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def gw(upstream):
    with GatewayProcess(_config(upstream.port), admin=True) as g:
        yield g


def test_hit_miss_and_key_parameters(gw, upstream):
    s1, h1, b1 = gw.request("GET", "/prod/pets/1?lang=en")
    s2, h2, b2 = gw.request("GET", "/prod/pets/1?lang=en")
    s3, h3, b3 = gw.request("GET", "/prod/pets/1?lang=fr")
    assert (s1, s2, s3) == (200, 200, 200), gw.logs()
    assert h1["x-cache"] == "Miss" and h2["x-cache"] == "Hit" and h3["x-cache"] == "Miss"
    assert b1 == b2 and b3 != b1
    assert upstream.counts["/pets/1"] == 2
    s, h, _ = gw.request("GET", "/prod/nocache")
    s, h, _ = gw.request("GET", "/prod/nocache")
    assert "x-cache" not in h and upstream.counts["/nocache"] == 2


def test_poisoning_unkeyed_header_does_not_reach_later_callers(gw, upstream):
    s, h, evil = gw.request("GET", "/prod/reflect", headers={"X-Evil-Host": "evil.example"})
    assert s == 200 and b"evil.example" in evil and h["x-cache"] == "Bypass"
    s, h, evil = gw.request("GET", "/prod/reflect", headers={"X-Forwarded-Host": "evil.example"})
    assert s == 200 and h["x-cache"] == "Bypass"
    s, h, good = gw.request("GET", "/prod/reflect")
    assert b"good.example" in good and h["x-cache"] == "Miss"
    s, h, evil = gw.request("GET", "/prod/reflect", headers={"X-Evil-Host": "evil2.example"})
    assert b"evil2.example" in evil and h["x-cache"] == "Bypass"
    s, h, victim = gw.request("GET", "/prod/reflect")
    assert h["x-cache"] == "Hit" and victim == good


def test_poisoning_error_from_an_odd_request_is_not_served_to_others(gw, upstream):
    s, h, b = gw.request("GET", "/prod/odd", headers={"X-Odd": "1"})
    assert s == 400
    s, h, b = gw.request("GET", "/prod/odd")
    assert s == 200 and b == b"fine"


def test_poisoning_authenticated_response_never_served_to_another_principal(gw, upstream):
    seen = {}
    for name in ("alice", "bob", "alice", "bob"):
        s, h, b = gw.request("GET", "/prod/who", headers={"X-Api-Key": KEYS[name]})
        if s != 200:
            continue     # the key check rejected it: nothing could leak either
        assert f"who={KEYS[name]}".encode() in b, (name, b)
        seen.setdefault(name, []).append(b)
    for name, bodies in seen.items():
        assert all(KEYS[name].encode() in b for b in bodies)


def test_coalescing_50_concurrent_misses_reach_the_upstream_once(gw, upstream):
    before = upstream.counts["/slow"]
    with ThreadPoolExecutor(50) as ex:
        results = list(ex.map(lambda _: gw.request("GET", "/prod/slow"), range(50)))
    assert all(r[0] == 200 for r in results)
    assert len({r[2] for r in results}) == 1
    assert upstream.counts["/slow"] - before == 1
    assert sum(r[1]["x-cache"] == "Miss" for r in results) == 1


def test_head_uses_the_get_entry_and_admin_flush(gw, upstream):
    gw.request("GET", "/prod/pets/7")
    n = upstream.counts["/pets/7"]
    s, h, b = gw.request("GET", "/prod/pets/7")
    assert h["x-cache"] == "Hit" and upstream.counts["/pets/7"] == n
    s, h, b = gw.request("DELETE", "/cache/shop/prod?route=GET%20/pets/%7Bid%7D", admin=True)
    assert s == 200, b
    s, h, b = gw.request("GET", "/prod/pets/7")
    assert h["x-cache"] == "Miss" and upstream.counts["/pets/7"] == n + 1
    s, h, b = gw.request("DELETE", "/cache/shop/prod", admin=True)
    assert s == 200
    s, h, b = gw.request("GET", "/prod/pets/7")
    assert h["x-cache"] == "Miss" and upstream.counts["/pets/7"] == n + 2
    s, h, b = gw.request("GET", "/cache", admin=True)
    assert s == 200 and b'"GET /pets/{id}"' in b


def test_invalidation_refused_for_anonymous_callers(gw, upstream):
    gw.request("GET", "/prod/pets/9")
    n = upstream.counts["/pets/9"]
    s, h, b = gw.request("GET", "/prod/pets/9", headers={"Cache-Control": "max-age=0"})
    assert s == 200 and h["x-cache"] == "Hit" and upstream.counts["/pets/9"] == n


def test_invalidation_allowed_with_the_token(gw, upstream):
    gw.request("GET", "/prod/pets/11")
    n = upstream.counts["/pets/11"]
    s, h, b = gw.request("GET", "/prod/pets/11",
                         headers={"Cache-Control": "max-age=0", "X-Cache-Invalidate-Token": TOKEN})
    assert s == 200 and h["x-cache"] == "Refresh" and upstream.counts["/pets/11"] == n + 1
    s, h, b2 = gw.request("GET", "/prod/pets/11")
    assert h["x-cache"] == "Hit" and b2 == b
