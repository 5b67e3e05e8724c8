"""The cache stage with hand-made Requests and a counting fake integration."""
from __future__ import annotations

import asyncio

import pytest

from proxy.cache import stage as stage_mod
from proxy.cache.memory import MemoryStore
from proxy.cache.entry import Entry
from proxy.context import Response

from .conftest import Upstream, build, call, hdr, make_request, run


def test_route_without_cache_gets_no_stage():
    assert build(stage_cache={"enabled": False})[0] is None
    assert build(stage_cache={"enabled": False}, route_cache={"enabled": True})[0] is not None
    assert build(route_cache={"enabled": False})[0] is None
    assert build(route_cache={"ttl": 0})[0] is None
    # POST is not cached unless the route opts in through methods
    assert build(route="POST /pets")[0] is None
    assert build(route="POST /pets", route_cache={"methods": ["POST"]})[0] is not None


def test_miss_then_hit():
    st, svc, _ = build()
    up = Upstream()

    async def go():
        a = await call(st, up)
        b = await call(st, up)
        return a, b
    a, b = run(go())
    assert up.calls == 1
    assert a.status == b.status == 200
    assert a.body == b.body == b"body 1 /prod/pets/1?"
    assert hdr(a, "x-cache") == "Miss" and hdr(b, "x-cache") == "Hit"
    assert hdr(b, "content-type") == "text/plain"
    assert hdr(b, "age") == "0"
    assert b.meta == {"cache": "hit"} and a.meta["cache"] == "miss"
    stats = svc.snapshot()["stages"]["shop/prod"]["routes"]["GET /pets/{id}"]
    assert stats["hits"] == 1 and stats["misses"] == 1


def test_hit_header_off_by_default():
    st, _, _ = build(stage_cache={"hit_header": False})
    up = Upstream()

    async def go():
        return [await call(st, up) for _ in range(2)]
    a, b = run(go())
    assert up.calls == 1
    assert hdr(a, "x-cache") is None and hdr(b, "x-cache") is None


def test_hit_is_a_copy_later_stages_cannot_change_the_entry():
    st, _, _ = build()
    up = Upstream()

    async def go():
        a = await call(st, up)
        b = await call(st, up)
        b.headers.append(("x-added", "1"))
        c = await call(st, up)
        return c
    c = run(go())
    assert hdr(c, "x-added") is None


def test_expiry(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(stage_mod, "_now", lambda: now[0])
    st, _, _ = build(stage_cache={"ttl": 60})
    up = Upstream()

    async def go():
        out = [await call(st, up)]
        now[0] += 59
        out.append(await call(st, up))
        now[0] += 2
        out.append(await call(st, up))
        return out
    a, b, c = run(go())
    assert up.calls == 2
    assert hdr(b, "x-cache") == "Hit" and hdr(b, "age") == "59"
    assert hdr(c, "x-cache") == "Miss" and c.body == b"body 2 /prod/pets/1?"


def test_route_ttl_overrides_stage_and_upstream_max_age_lowers_it(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(stage_mod, "_now", lambda: now[0])
    st, _, _ = build(stage_cache={"ttl": 300}, route_cache={"ttl": 10})
    up = Upstream()

    async def go():
        await call(st, up)
        now[0] += 11
        await call(st, up)
    run(go())
    assert up.calls == 2
    st, _, _ = build(stage_cache={"ttl": 300})
    up = Upstream(lambda req, n: Response(200, [("Cache-Control", "public, max-age=5")], b"x"))

    async def go2():
        await call(st, up)
        now[0] += 4
        await call(st, up)
        now[0] += 2
        await call(st, up)
    run(go2())
    assert up.calls == 2


def test_key_parameters_included_and_excluded():
    st, _, _ = build(route_cache={"key": ["path.id", "query.lang", "header.accept"]})
    up = Upstream()

    async def go():
        await call(st, up, query="lang=en")
        await call(st, up, query="lang=fr")
        await call(st, up, query="lang=en")                               # hit
        await call(st, up, query="lang=en", headers=[("Accept", "text/html")])
        await call(st, up, query="lang=en", headers=[("Accept", "text/html")])  # hit
        await call(st, up, path="/prod/pets/2", params={"id": "2"}, query="lang=en")
    run(go())
    assert up.calls == 4


def test_excluded_query_parameter_ignored_mode():
    st, _, _ = build(route_cache={"key": ["query.lang"], "unkeyed": "ignore"})
    up = Upstream()

    async def go():
        a = await call(st, up, query="lang=en&utm=1")
        b = await call(st, up, query="lang=en&utm=2")
        return a, b
    a, b = run(go())
    assert up.calls == 1 and hdr(b, "x-cache") == "Hit"


def test_undeclared_query_parameter_bypasses_by_default():
    st, _, _ = build(route_cache={"key": ["query.lang"]})
    up = Upstream()

    async def go():
        a = await call(st, up, query="lang=en&debug=1")
        b = await call(st, up, query="lang=en&debug=1")
        c = await call(st, up, query="lang=en")
        d = await call(st, up, query="lang=en")
        return a, b, c, d
    a, b, c, d = run(go())
    assert up.calls == 3
    assert hdr(a, "x-cache") == "Bypass" and hdr(b, "x-cache") == "Bypass"
    assert hdr(d, "x-cache") == "Hit" and d.body == c.body


def test_query_order_does_not_matter_repeats_do():
    st, _, _ = build(route_cache={"key": ["query.a", "query.b"]})
    up = Upstream()

    async def go():
        x = await call(st, up, query="a=1&b=2")
        y = await call(st, up, query="b=2&a=1")
        z = await call(st, up, query="a=1&b=2&a=1")
        return x, y, z
    x, y, z = run(go())
    assert up.calls == 2
    assert hdr(y, "x-cache") == "Hit" and hdr(z, "x-cache") == "Miss"


def test_head_is_served_from_the_get_entry():
    st, _, _ = build(route="ANY /pets/{id}")
    up = Upstream()

    async def go():
        h0 = await call(st, up, method="HEAD")     # miss: passed through, nothing stored
        g = await call(st, up)
        h = await call(st, up, method="HEAD")
        return h0, g, h
    h0, g, h = run(go())
    assert up.calls == 2
    assert [r.method for r in up.seen] == ["HEAD", "GET"]
    assert hdr(h0, "x-cache") == "Miss"
    assert hdr(h, "x-cache") == "Hit" and h.status == 200 and h.body == b""
    assert hdr(h, "content-type") == "text/plain"


def test_any_route_caches_only_the_declared_methods():
    st, _, _ = build(route="ANY /pets/{id}")
    up = Upstream()

    async def go():
        for _ in range(2):
            await call(st, up, method="DELETE")
    run(go())
    assert up.calls == 2


@pytest.mark.parametrize("headers", [
    [("Cache-Control", "no-store")],
    [("cache-control", "private, max-age=60")],
    [("Cache-Control", "no-cache")],
    [("Set-Cookie", "session=abc")],
    [("Vary", "*")],
    [("Cache-Control", "max-age=0")],
])
def test_responses_that_must_not_be_stored(headers):
    st, svc, _ = build()
    up = Upstream(lambda req, n: Response(200, list(headers), f"r{n}".encode()))

    async def go():
        return [await call(st, up) for _ in range(2)]
    a, b = run(go())
    assert up.calls == 2 and b.body == b"r2"
    assert len(svc.stores[("shop", "prod")]) == 0


@pytest.mark.parametrize("status", [201, 204, 299])
def test_2xx_is_cached(status):
    st, _, _ = build()
    up = Upstream(lambda req, n: Response(status, [], b"" if status == 204 else b"ok"))

    async def go():
        return [await call(st, up) for _ in range(2)]
    run(go())
    assert up.calls == 1


@pytest.mark.parametrize("status", [206, 301, 400, 404, 500, 502, 503])
def test_non_2xx_not_cached(status):
    st, _, _ = build()
    up = Upstream(lambda req, n: Response(status, [], f"e{n}".encode()))

    async def go():
        return [await call(st, up) for _ in range(2)]
    a, b = run(go())
    assert up.calls == 2 and b.body == b"e2" and b.status == status


def test_configured_statuses_are_cached():
    st, _, _ = build(route_cache={"statuses": [200, 404]})
    up = Upstream(lambda req, n: Response(404, [], f"nf{n}".encode()))

    async def go():
        return [await call(st, up) for _ in range(2)]
    a, b = run(go())
    assert up.calls == 1 and b.status == 404 and b.body == b"nf1"


def test_oversize_not_cached():
    st, _, _ = build(stage_cache={"max_entry_bytes": 1000})
    up = Upstream(lambda req, n: Response(200, [], bytes([n]) * 1001))

    async def go():
        return [await call(st, up) for _ in range(2)]
    a, b = run(go())
    assert up.calls == 2 and len(b.body) == 1001 and b.body[0] == 2
    st, _, _ = build(stage_cache={"max_entry_bytes": 1000})
    up = Upstream(lambda req, n: Response(200, [], b"x" * 1000))
    run(go())
    assert up.calls == 1


def _streamed(chunks, closed):
    async def gen():
        for c in chunks:
            yield c

    async def on_close():
        closed.append(True)
    return Response(200, [("content-type", "application/octet-stream")], stream=gen(),
                    on_close=on_close)


def test_streamed_response_under_the_limit_is_buffered_and_cached():
    st, _, _ = build(stage_cache={"max_entry_bytes": 1000})
    closed = []
    up = Upstream(lambda req, n: _streamed([b"a" * 300, b"b" * 300, b"c" * 300], closed))

    async def go():
        a = await st(make_request(), up)
        assert a.stream is None and a.on_close is not None   # the app still releases it
        await a.on_close()
        b = await call(st, up)
        return a, b
    a, b = run(go())
    assert up.calls == 1 and closed == [True]
    assert a.body == b.body == b"a" * 300 + b"b" * 300 + b"c" * 300


def test_streamed_response_over_the_limit_passes_through_whole():
    st, svc, _ = build(stage_cache={"max_entry_bytes": 1000})
    closed = []
    chunks = [bytes([65 + i]) * 400 for i in range(6)]
    up = Upstream(lambda req, n: _streamed(chunks, closed))

    async def go():
        a = await st(make_request(), up)
        assert a.stream is not None and a.on_close is not None
        body = b"".join([c async for c in a.stream])
        await a.on_close()
        b = await call(st, up)
        return body, b
    body, b = run(go())
    assert body == b"".join(chunks)
    assert up.calls == 2 and b.body == body and closed == [True]   # call() leaves b's to the app
    assert len(svc.stores[("shop", "prod")]) == 0


def test_lru_eviction_under_byte_capacity():
    s = MemoryStore(10_000)
    for i in range(100):
        s.put(b"k%d" % i, Entry(b"c%d" % i, 200, [], b"x" * 1000, 0, 1e18, "r"))
        assert s.size <= 10_000
    assert len(s) == 7 and s.evictions == 93
    assert s.get(b"k99", 0) is not None and s.get(b"k0", 0) is None
    # get refreshes recency: k93 survives the next insert, k94 does not
    assert s.get(b"k93", 0) is not None
    s.put(b"new", Entry(b"n", 200, [], b"x" * 1000, 0, 1e18, "r"))
    assert s.get(b"k93", 0) is not None and s.get(b"k94", 0) is None
    # an entry larger than the whole store is refused
    assert not s.put(b"big", Entry(b"b", 200, [], b"x" * 20_000, 0, 1e18, "r"))


def test_memory_bounded_under_a_flood_of_distinct_keys():
    st, svc, _ = build(stage_cache={"capacity_mb": 1}, route_cache={"key": ["query.q"]})
    up = Upstream(lambda req, n: Response(200, [], b"x" * 2000))

    async def go():
        for i in range(3000):
            await call(st, up, query=f"q={i}")
    run(go())
    store = svc.stores[("shop", "prod")]
    assert store.size <= 1024 * 1024
    assert 100 < len(store) < 3000 and store.evictions > 0


def test_vary_is_honoured():
    st, _, _ = build()

    def respond(req, n):
        return Response(200, [("Vary", "Accept-Language")],
                        f"{req.header('accept-language')} {n}".encode())
    up = Upstream(respond)

    async def go():
        de1 = await call(st, up, headers=[("Accept-Language", "de")])
        fr1 = await call(st, up, headers=[("Accept-Language", "fr")])
        de2 = await call(st, up, headers=[("Accept-Language", "de")])
        fr2 = await call(st, up, headers=[("Accept-Language", "fr")])
        none = await call(st, up)
        return de1, fr1, de2, fr2, none
    de1, fr1, de2, fr2, none = run(go())
    assert up.calls == 3
    assert de2.body == b"de 1" and fr2.body == b"fr 2" and none.body == b"None 3"
    assert hdr(de2, "x-cache") == "Hit" and hdr(fr2, "x-cache") == "Hit"


def test_identity_is_part_of_the_key_on_authenticated_routes():
    st, _, _ = build(route_extra={"api_key_required": True})
    up = Upstream(lambda req, n: Response(200, [], f"for {req.api_key}".encode()))

    async def go():
        a = await call(st, up, api_key="alice", headers=[("x-api-key", "A")])
        b = await call(st, up, api_key="bob", headers=[("x-api-key", "B")])
        a2 = await call(st, up, api_key="alice", headers=[("x-api-key", "A")])
        p1 = await call(st, up, principal={"sub": "u1"})
        p2 = await call(st, up, principal={"sub": "u2"})
        return a, b, a2, p1, p2
    a, b, a2, p1, p2 = run(go())
    assert up.calls == 4
    assert b.body == b"for bob" and a2.body == b"for alice" and hdr(a2, "x-cache") == "Hit"


def test_shared_route_serves_all_callers_from_one_entry():
    st, _, _ = build(route_cache={"shared": True}, route_extra={"api_key_required": True})
    up = Upstream()

    async def go():
        await call(st, up, api_key="alice", headers=[("x-api-key", "A")])
        return await call(st, up, api_key="bob", headers=[("x-api-key", "B")])
    b = run(go())
    assert up.calls == 1 and hdr(b, "x-cache") == "Hit"


def test_credentials_the_gateway_does_not_check_bypass_the_cache():
    st, _, _ = build()
    up = Upstream()

    async def go():
        for h in ([("Authorization", "Bearer x")], [("Cookie", "s=1")], [("X-Api-Key", "k")]):
            r = await call(st, up, headers=h)
            assert hdr(r, "x-cache") == "Bypass"
    run(go())
    assert up.calls == 3


def test_get_with_a_body_bypasses():
    st, _, _ = build()
    up = Upstream()

    async def go():
        await call(st, up)
        return await call(st, up, body=b"fat get")
    r = run(go())
    assert up.calls == 2 and hdr(r, "x-cache") == "Bypass"


def test_post_opt_in_keys_the_body():
    st, _, _ = build(route="POST /search", route_cache={"methods": ["POST"]})
    up = Upstream(lambda req, n: Response(200, [], f"{n}".encode()))

    async def go():
        a = await call(st, up, method="POST", body=b'{"q":1}', path="/prod/search", params={})
        b = await call(st, up, method="POST", body=b'{"q":2}', path="/prod/search", params={})
        c = await call(st, up, method="POST", body=b'{"q":1}', path="/prod/search", params={})
        return a, b, c
    a, b, c = run(go())
    assert up.calls == 2 and c.body == b"1" and b.body == b"2"


# ------------------------------------------------------------------ coalescing

def test_coalescing_50_concurrent_misses_reach_the_upstream_once():
    st, svc, _ = build()
    up = Upstream(delay=0.05)

    async def go():
        return await asyncio.gather(*[call(st, up) for _ in range(50)])
    rs = run(go())
    assert up.calls == 1
    assert all(r.status == 200 and r.body == b"body 1 /prod/pets/1?" for r in rs)
    assert sorted(hdr(r, "x-cache") for r in rs) == ["Hit"] * 49 + ["Miss"]
    assert svc.inflight == {}
    assert svc.routes[("shop", "prod", "GET /pets/{id}")].coalesced == 49


def test_coalescing_does_not_share_an_uncacheable_answer():
    st, svc, _ = build()
    up = Upstream(lambda req, n: Response(200, [("Cache-Control", "private")],
                                          f"secret {n}".encode()), delay=0.02)

    async def go():
        return await asyncio.gather(*[call(st, up) for _ in range(10)])
    rs = run(go())
    assert up.calls == 10
    assert sorted(r.body for r in rs) == sorted(f"secret {n}".encode() for n in range(1, 11))
    assert svc.inflight == {}


def test_coalescing_survives_a_failing_leader():
    st, svc, _ = build()

    def respond(req, n):
        if n == 1:
            raise RuntimeError("upstream blew up")
        return Response(200, [], b"ok")
    up = Upstream(respond, delay=0.02)

    async def go():
        return await asyncio.gather(*[call(st, up) for _ in range(5)], return_exceptions=True)
    rs = run(go())
    assert sum(isinstance(r, RuntimeError) for r in rs) == 1
    assert all(r.body == b"ok" for r in rs if not isinstance(r, Exception))
    assert svc.inflight == {}


def test_coalesced_waiters_respect_vary():
    st, _, _ = build()

    def respond(req, n):
        return Response(200, [("Vary", "accept-language")], req.header("accept-language").encode())
    up = Upstream(respond, delay=0.02)

    async def go():
        return await asyncio.gather(
            call(st, up, headers=[("accept-language", "de")]),
            call(st, up, headers=[("accept-language", "fr")]),
            call(st, up, headers=[("accept-language", "de")]))
    a, b, c = run(go())
    assert (a.body, b.body, c.body) == (b"de", b"fr", b"de")
    assert up.calls == 2


# ------------------------------------------------------------------ invalidation

_KEYS = {"api_keys": {"ops": {"sha256": "0" * 64, "can_invalidate_cache": True},
                      "user": {"sha256": "1" * 64}}}


def test_invalidation_allowed_refreshes_the_entry():
    st, svc, _ = build(cfg=_KEYS, route_extra={"api_key_required": True}, route_cache={"shared": True})
    up = Upstream()

    async def go():
        await call(st, up, api_key="user", headers=[("x-api-key", "u")])
        r = await call(st, up, api_key="ops", headers=[("x-api-key", "o"), ("Cache-Control", "max-age=0")])
        after = await call(st, up, api_key="user", headers=[("x-api-key", "u")])
        return r, after
    r, after = run(go())
    assert up.calls == 2
    assert hdr(r, "x-cache") == "Refresh" and after.body == b"body 2 /prod/pets/1?"
    assert hdr(after, "x-cache") == "Hit"


def test_invalidation_refused_is_ignored_by_default():
    st, _, _ = build(cfg=_KEYS, route_extra={"api_key_required": True}, route_cache={"shared": True})
    up = Upstream()

    async def go():
        await call(st, up, api_key="user", headers=[("x-api-key", "u")])
        return await call(st, up, api_key="user", headers=[("x-api-key", "u"), ("cache-control", "max-age=0")])
    r = run(go())
    assert up.calls == 1 and hdr(r, "x-cache") == "Hit"


def test_invalidation_refused_with_403_when_configured():
    st, _, _ = build(cfg=_KEYS, route_extra={"api_key_required": True},
                     api_extra={"cache_invalidation": {"unauthorized": "fail"}})
    up = Upstream()

    async def go():
        await call(st, up, api_key="user")
        return await call(st, up, api_key="user", headers=[("Cache-Control", "max-age=0")])
    r = run(go())
    assert up.calls == 1 and r.status == 403
    assert b"not authorized" in r.body.lower()


def test_invalidation_by_token_and_token_not_forwarded():
    import hashlib
    tok = "s3cret-token"
    st, _, _ = build(api_extra={"cache_invalidation": {
        "token_sha256": hashlib.sha256(tok.encode()).hexdigest(), "unauthorized": "fail"}})
    up = Upstream()

    async def go():
        await call(st, up)
        bad = await call(st, up, headers=[("cache-control", "max-age=0"),
                                          ("x-cache-invalidate-token", "wrong")])
        good = await call(st, up, headers=[("cache-control", "max-age=0"),
                                           ("x-cache-invalidate-token", tok)])
        return bad, good
    bad, good = run(go())
    assert bad.status == 403 and good.status == 200 and hdr(good, "x-cache") == "Refresh"
    assert up.calls == 2
    assert all(k != "x-cache-invalidate-token" for k, _ in up.seen[-1].headers)


def test_invalidation_without_authorization_required():
    st, _, _ = build(api_extra={"cache_invalidation": {"require_authorization": False}})
    up = Upstream()

    async def go():
        await call(st, up)
        return await call(st, up, headers=[("cache-control", "max-age=0")])
    r = run(go())
    assert up.calls == 2 and hdr(r, "x-cache") == "Refresh"


# ------------------------------------------------------------------ poisoning

def test_unkeyed_header_cannot_change_what_later_callers_get():
    st, _, _ = build()

    def respond(req, n):
        host = req.header("x-forwarded-host") or req.header("x-evil") or "api.test"
        return Response(200, [], f'<script src="https://{host}/app.js">'.encode())
    up = Upstream(respond)

    async def go():
        evil = await call(st, up, headers=[("X-Forwarded-Host", "evil.example")])
        evil2 = await call(st, up, headers=[("X-Evil", "evil.example")])
        victim = await call(st, up)
        victim2 = await call(st, up)
        return evil, evil2, victim, victim2
    evil, evil2, victim, victim2 = run(go())
    assert b"evil.example" in evil.body and b"evil.example" in evil2.body
    assert b"evil.example" not in victim.body and b"evil.example" not in victim2.body
    assert hdr(victim2, "x-cache") == "Hit"


def test_error_caused_by_one_odd_request_is_not_served_to_others():
    st, _, _ = build(route_cache={"unkeyed": "ignore"})

    def respond(req, n):
        if req.header("x-odd"):
            return Response(400, [], b"bad odd header")
        return Response(200, [], b"fine")
    up = Upstream(respond)

    async def go():
        odd = await call(st, up, headers=[("X-Odd", "1")])
        normal = await call(st, up)
        return odd, normal
    odd, normal = run(go())
    assert odd.status == 400 and normal.status == 200 and normal.body == b"fine"


# ------------------------------------------------------------------ admin flush

class _AReq:
    def __init__(self, method, path, query=""):
        self.method, self.path, self.query, self.headers, self.body = method, path, query, {}, b""


def test_admin_flush_stage_and_route():
    from types import SimpleNamespace
    from proxy import cache
    gw = SimpleNamespace(cfg={}, services=SimpleNamespace())
    gw.services.cache = cache.build_service(gw)
    a, svc, _ = build(route="GET /pets/{id}", gw=gw)
    b, _, _ = build(route="GET /cats/{id}", gw=gw)
    handlers = {(m, p): h for m, p, h in cache.admin_routes(gw)}
    flush = handlers[("DELETE", "/cache/*")]
    up = Upstream()

    async def go():
        await call(a, up)
        await call(b, up, path="/prod/cats/1")
        r = await flush(_AReq("DELETE", "/cache/shop/prod", "route=GET%20/pets/%7Bid%7D"))
        assert r.status == 200 and b'"flushed"' in r.body
        await call(a, up)                       # refetched
        await call(b, up, path="/prod/cats/1")  # still cached
        r = await flush(_AReq("DELETE", "/cache/shop/prod"))
        assert r.status == 200
        await call(a, up)
        await call(b, up, path="/prod/cats/1")
        assert (await flush(_AReq("DELETE", "/cache/shop/nope"))).status == 404
        assert (await flush(_AReq("DELETE", "/cache/shop/prod", "route=GET%20/nope"))).status == 404
        stats = await handlers[("GET", "/cache")](_AReq("GET", "/cache"))
        assert stats.status == 200 and b"GET /pets/{id}" in stats.body
    run(go())
    assert up.calls == 5


def test_check_reports_unknown_path_parameters():
    from proxy.cache import check

    class Loc:
        def problem(self, path, text):
            return f"cfg.yaml:1: {'.'.join(map(str, path))}: {text}"
    cfg = {"apis": {"shop": {"routes": [
        {"route": "GET /pets/{id}", "cache": {"key": ["path.id", "path.petId"]}},
        {"route": "POST /x", "cache": {"enabled": True}},
        {"route": "POST /y", "cache": {"enabled": True, "methods": ["POST"]}},
    ]}}}
    probs = check(cfg, Loc())
    assert len(probs) == 2
    assert "path.petId" in probs[0] and "no path parameter 'petId'" in probs[0]
    assert "routes.1.cache.enabled" in probs[1]


def test_authenticated_route_without_an_identity_is_never_cached():
    st, _, _ = build(route_extra={"api_key_required": True})
    up = Upstream(lambda req, n: Response(200, [], f"for {req.header('x-api-key')}".encode()))

    async def go():
        a = await call(st, up, headers=[("x-api-key", "A")])
        b = await call(st, up, headers=[("x-api-key", "B")])
        return a, b
    a, b = run(go())
    assert up.calls == 2 and b.body == b"for B" and hdr(b, "x-cache") == "Bypass"
