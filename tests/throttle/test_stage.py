"""The throttle stage in-process: each level alone and stacked, order, 429 bodies,
Retry-After, per-client limits, quota periods with an injectable clock."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from proxy.throttle import period_bounds

from .conftest import sha

BASE = """
apis:
  shop:
    type: rest
    stages:
      prod: {STAGE}
    routes:
      - route: GET /a
        integration: {type: mock, body: {ok: a}}
        ROUTE_A
      - route: GET /b
        integration: {type: mock, body: {ok: b}}
"""


def cfg(account="throttle: {enabled: false}", stage="{}", route_a=""):
    return account + "\n" + BASE.replace("{STAGE}", stage).replace("ROUTE_A", route_a)


def statuses(g, path, n, **kw):
    return [g.call("GET", path, **kw)[0] for _ in range(n)]


def test_account_default_is_10000_per_s_burst_5000(make_gateway):
    g = make_gateway(BASE.replace("{STAGE}", "{}").replace("ROUTE_A", ""))
    assert g.gw.cfg["throttle"]["rate"] == 10000 and g.gw.cfg["throttle"]["burst"] == 5000
    ok = statuses(g, "/prod/a", 5001)
    assert ok.count(200) == 5000 and ok[-1] == 429
    g.mono.advance(0.01)                              # 100 tokens at 10,000/s
    assert statuses(g, "/prod/b", 101).count(200) == 100


def test_no_level_no_stage(make_gateway):
    g = make_gateway(cfg())
    route = g.gw.apis[0].stages["prod"].router.match("GET", "/a")[1]
    assert route.handler.__qualname__ != "build_stage.<locals>.throttle"
    assert statuses(g, "/prod/a", 50) == [200] * 50


def test_route_level_burst_then_steady_rate(make_gateway):
    g = make_gateway(cfg(route_a="throttle: {rate: 2, burst: 3}"))
    assert statuses(g, "/prod/a", 4) == [200, 200, 200, 429]
    assert statuses(g, "/prod/b", 10) == [200] * 10   # another route is not limited
    accepted = 0
    for _ in range(100):                              # 10 s at 10 attempts/s
        g.mono.advance(0.1)
        accepted += g.call("GET", "/prod/a")[0] == 200
    assert accepted in (19, 20, 21)                   # rate 2/s


def test_429_body_and_retry_after(make_gateway):
    g = make_gateway(cfg(route_a="throttle: {rate: 0.25, burst: 1}"))
    assert g.call("GET", "/prod/a")[0] == 200
    status, headers, body, _ = g.call("GET", "/prod/a")
    assert status == 429
    assert json.loads(body) == {"message": "Too Many Requests"}
    assert headers["content-type"] == "application/json"
    assert headers["retry-after"] == "4"              # one token every 4 s
    g.mono.advance(2.5)
    assert g.call("GET", "/prod/a")[1]["retry-after"] == "2"   # ceil(1.5)
    g.mono.advance(1.5)
    assert g.call("GET", "/prod/a")[0] == 200


def test_rate_zero_refuses_everything_after_burst(make_gateway):
    g = make_gateway(cfg(route_a="throttle: {rate: 0, burst: 0}"))
    status, headers, body, _ = g.call("GET", "/prod/a")
    assert status == 429 and headers["retry-after"] == "60"


def test_stage_level_is_shared_by_routes(make_gateway):
    g = make_gateway(cfg(stage="{throttle: {rate: 1, burst: 3}}"))
    assert [g.call("GET", p)[0] for p in ("/prod/a", "/prod/b", "/prod/a", "/prod/b")] == [200, 200, 200, 429]


def test_account_level_is_shared_by_stages(make_gateway):
    g = make_gateway(cfg(account="throttle: {rate: 1, burst: 2}"))
    assert [g.call("GET", p)[0] for p in ("/prod/a", "/prod/b", "/prod/a")] == [200, 200, 429]


def test_levels_stacked_all_or_nothing(make_gateway):
    # route 5 burst, stage 3 burst: the stage refuses the 4th; the route kept its tokens
    g = make_gateway(cfg(account="throttle: {rate: 1000, burst: 6}",
                         stage="{throttle: {rate: 0.5, burst: 3}}",
                         route_a="throttle: {rate: 0.5, burst: 5}"))
    assert statuses(g, "/prod/a", 4) == [200, 200, 200, 429]
    st = g.gw.services.state
    from gwcore import load
    rl = load("ratelimit")
    levels = st.table.read([rl.Bucket("r:shop/prod:GET /a", 0.5, 5),
                            rl.Bucket("s:shop/prod", 0.5, 3), rl.Bucket("a", 1000, 6)],
                           g.mono())
    assert levels == [2.0, 0.0, 3.0]               # the refused 4th took nothing anywhere
    # the account (6) refuses once the stage has refilled: /b passes the stage only
    g.mono.advance(6.0)                            # stage +3, route +3 (capped at 5)
    assert statuses(g, "/prod/b", 3) == [200, 200, 200]
    assert g.call("GET", "/prod/b")[0] == 429      # stage empty again


def test_order_route_refuses_before_stage(make_gateway):
    g = make_gateway(cfg(stage="{throttle: {rate: 1, burst: 1}}",
                         route_a="throttle: {rate: 0.1, burst: 1}"))
    assert g.call("GET", "/prod/a")[0] == 200
    g.mono.advance(1.0)                            # stage has a token again, the route not
    _, h, _, _ = g.call("GET", "/prod/a")
    assert h["retry-after"] == "9"                 # the route's wait, not the stage's


def test_per_client_limits_use_resolved_client_never_raw_xff(make_gateway):
    g = make_gateway(cfg(route_a="throttle: {rate: 1000, burst: 1000, per_client: {rate: 1, burst: 2}}"))
    assert statuses(g, "/prod/a", 3, client_ip="10.0.0.1") == [200, 200, 429]
    assert statuses(g, "/prod/a", 2, client_ip="10.0.0.2") == [200, 200]
    # a forged X-Forwarded-For changes nothing: the key is req.client_ip
    assert g.call("GET", "/prod/a", headers={"x-forwarded-for": "1.2.3.4"}, client_ip="10.0.0.1")[0] == 429


def test_per_client_peer_key(make_gateway):
    g = make_gateway(cfg(route_a="throttle: {rate: 1000, burst: 1000, per_client: {rate: 1, burst: 1, key: peer}}"))
    assert g.call("GET", "/prod/a", client_ip="1.1.1.1", peer_ip="10.9.9.9")[0] == 200
    assert g.call("GET", "/prod/a", client_ip="2.2.2.2", peer_ip="10.9.9.9")[0] == 429


# ---------------------------------------------------------------- quotas

def ts(s: str) -> float:
    return datetime.fromisoformat(s).replace(tzinfo=timezone.utc).timestamp()


def test_period_bounds():
    t = ts("2024-05-15T13:00:00")                  # a Wednesday
    assert period_bounds("DAY", 0, t) == (ts("2024-05-15T00:00:00"), ts("2024-05-16T00:00:00"))
    assert period_bounds("WEEK", 0, t) == (ts("2024-05-12T00:00:00"), ts("2024-05-19T00:00:00"))  # Sunday
    assert period_bounds("WEEK", 1, t) == (ts("2024-05-13T00:00:00"), ts("2024-05-20T00:00:00"))  # Monday
    assert period_bounds("WEEK", 3, t) == (ts("2024-05-15T00:00:00"), ts("2024-05-22T00:00:00"))
    assert period_bounds("WEEK", 4, t) == (ts("2024-05-09T00:00:00"), ts("2024-05-16T00:00:00"))
    assert period_bounds("MONTH", 0, t) == (ts("2024-05-01T00:00:00"), ts("2024-06-01T00:00:00"))
    assert period_bounds("MONTH", 19, t) == (ts("2024-04-20T00:00:00"), ts("2024-05-20T00:00:00"))
    assert period_bounds("MONTH", 14, t) == (ts("2024-05-15T00:00:00"), ts("2024-06-15T00:00:00"))
    assert period_bounds("MONTH", 4, ts("2024-12-31T23:59:59")) == (ts("2024-12-05T00:00:00"), ts("2025-01-05T00:00:00"))
    assert period_bounds("MONTH", 4, ts("2025-01-02T00:00:00")) == (ts("2024-12-05T00:00:00"), ts("2025-01-05T00:00:00"))


QUOTA = """
throttle: {enabled: false}
api_keys:
  alice: {sha256: %s}
usage_plans:
  gold: {stages: [shop/prod], keys: [alice], quota: {limit: 3, period: %s, offset: %d}}
apis:
  shop:
    type: rest
    stages: {prod: {}}
    routes:
      - route: GET /k
        api_key_required: true
        integration: {type: mock, body: {ok: k}}
"""


@pytest.mark.parametrize("period,offset,start,before_end,next_start", [
    ("DAY", 0, "2024-05-15T10:00:00", "2024-05-15T23:59:59", "2024-05-16T00:00:00"),
    ("WEEK", 1, "2024-05-15T10:00:00", "2024-05-19T23:59:59", "2024-05-20T00:00:00"),
    ("MONTH", 9, "2024-05-15T10:00:00", "2024-06-09T23:59:59", "2024-06-10T00:00:00"),
])
def test_quota_resets_on_the_period_boundary(make_gateway, period, offset, start, before_end, next_start):
    g = make_gateway(QUOTA % (sha("k-alice"), period, offset), wall=ts(start))
    h = {"x-api-key": "k-alice"}
    assert [g.call("GET", "/prod/k", headers=h)[0] for _ in range(3)] == [200] * 3
    status, headers, body, _ = g.call("GET", "/prod/k", headers=h)
    assert status == 429 and json.loads(body) == {"message": "Limit Exceeded"}
    assert int(headers["retry-after"]) == int(ts(next_start) - ts(start))
    g.wall.t = ts(before_end)
    assert g.call("GET", "/prod/k", headers=h)[0] == 429
    assert g.call("GET", "/prod/k", headers=h)[1]["retry-after"] == "1"
    g.wall.t = ts(next_start)
    assert [g.call("GET", "/prod/k", headers=h)[0] for _ in range(4)] == [200, 200, 200, 429]


def test_config_checks_reject_bad_plans(tmp_path):
    from proxy.config import ConfigError, load_config
    from proxy.gateway import compile_gateway
    p = tmp_path / "g.yaml"
    p.write_text(QUOTA.replace("stages: [shop/prod], keys: [alice]",
                               "stages: [shop/test, nope/prod], keys: [alice, carol]")
                 % (sha("x"), "DAY", 2))
    with pytest.raises(ConfigError) as e:
        compile_gateway(*load_config(str(p)))
    text = str(e.value)
    assert "DAY quota has offset 0" in text
    assert "has no stage 'test'" in text
    assert "no API named 'nope'" in text
    assert "no API key named 'carol'" in text
