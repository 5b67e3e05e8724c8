"""API keys in-process: missing, wrong, disabled, right; the key's plan applied; usage
counted; the admin endpoints (list, enable/disable without restart, GetUsage); the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone

import pytest

from proxy import keys_cli

from .conftest import sha

KEYS = """
throttle: {rate: 1000, burst: 1000}
api_keys:
  alice: {sha256: %(alice)s}
  bob: {sha256: %(bob)s}
  carol: {sha256: %(carol)s, enabled: false}
  dave: {sha256: %(dave)s}
usage_plans:
  gold:
    stages: [shop/prod]
    keys: [alice, carol]
    throttle: {rate: 1, burst: 3}
    quota: {limit: 100, period: MONTH}
    route_throttle: {"GET /slow": {rate: 1, burst: 1}}
  silver:
    stages: [shop/prod]
    keys: [bob]
    throttle: {rate: 1, burst: 1}
apis:
  shop:
    type: rest
    stages: {prod: {}, test: {}}
    routes:
      - route: GET /k
        api_key_required: true
        integration: {type: mock, body: {ok: k}}
      - route: GET /slow
        api_key_required: true
        integration: {type: mock, body: {ok: slow}}
      - route: GET /open
        integration: {type: mock, body: {ok: open}}
""" % {"alice": sha("alice-key"), "bob": sha("bob-key"), "carol": sha("carol-key"),
       "dave": sha("dave-key")}

A = {"x-api-key": "alice-key"}
B = {"x-api-key": "bob-key"}
MAY_1 = datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp()


def forbidden(g, path, headers=None):
    status, _, body, _ = g.call("GET", path, headers=headers)
    return status == 403 and json.loads(body) == {"message": "Forbidden"}


def test_missing_wrong_disabled_unplanned_keys_are_403(make_gateway):
    g = make_gateway(KEYS)
    assert forbidden(g, "/prod/k")
    assert forbidden(g, "/prod/k", {"x-api-key": ""})
    assert forbidden(g, "/prod/k", {"x-api-key": "alice-kez"})
    assert forbidden(g, "/prod/k", {"x-api-key": sha("alice-key")})     # the digest is not the key
    assert forbidden(g, "/prod/k", {"x-api-key": "carol-key"})          # disabled
    assert forbidden(g, "/prod/k", {"x-api-key": "dave-key"})           # in no plan
    assert forbidden(g, "/test/k", A)                                   # plan does not cover test
    assert g.call("GET", "/prod/open")[0] == 200                        # no key needed


def test_right_key_passes_and_is_named(make_gateway):
    g = make_gateway(KEYS)
    status, _, body, req = g.call("GET", "/prod/k", headers=A)
    assert status == 200 and json.loads(body) == {"ok": "k"}
    assert req.api_key == "alice"


def test_each_key_gets_its_plan(make_gateway):
    g = make_gateway(KEYS)
    assert [g.call("GET", "/prod/k", headers=A)[0] for _ in range(4)] == [200, 200, 200, 429]
    assert [g.call("GET", "/prod/k", headers=B)[0] for _ in range(2)] == [200, 429]   # silver: burst 1
    status, h, body, _ = g.call("GET", "/prod/k", headers=A)
    assert json.loads(body) == {"message": "Too Many Requests"} and h["retry-after"] == "1"
    # the plan bucket is per key: a third key is not affected by alice's use
    g.mono.advance(1.0)
    assert g.call("GET", "/prod/k", headers=A)[0] == 200


def test_route_override_replaces_the_plan_bucket(make_gateway):
    g = make_gateway(KEYS)
    assert [g.call("GET", "/prod/slow", headers=A)[0] for _ in range(2)] == [200, 429]
    # /k still has the plan's own 3-burst bucket, untouched by /slow
    assert [g.call("GET", "/prod/k", headers=A)[0] for _ in range(4)] == [200, 200, 200, 429]


def test_usage_is_counted_and_reported_like_getusage(make_gateway):
    g = make_gateway(KEYS, wall=MAY_1 + 3600)
    for _ in range(5):                                        # 3 accepted, 2 throttled
        g.call("GET", "/prod/k", headers=A)
    g.wall.t = MAY_1 + 86400 + 10                            # next day
    g.mono.advance(10)
    for _ in range(2):
        g.call("GET", "/prod/k", headers=A)
    resp = g.admin("GET", "/usageplans/gold/usage", "startDate=2024-04-30&endDate=2024-05-03")
    assert resp.status == 200
    doc = json.loads(resp.body)
    assert doc["usagePlanId"] == "gold" and doc["startDate"] == "2024-04-30"
    assert doc["items"]["alice"] == [[0, 100], [3, 97], [2, 95], [0, 95]]
    assert doc["items"]["carol"] == [[0, 100]] * 4
    one = json.loads(g.admin("GET", "/usageplans/gold/usage",
                             "startDate=2024-05-02&endDate=2024-05-02&keyId=alice").body)
    assert one["items"] == {"alice": [[2, 95]]}               # remaining counts May 1st too
    silver = json.loads(g.admin("GET", "/usageplans/silver/usage", "startDate=2024-05-01&endDate=2024-05-01").body)
    assert silver["items"] == {"bob": [[0, None]]}
    assert g.admin("GET", "/usageplans/gold/usage", "startDate=2024-05-03&endDate=2024-05-01").status == 400
    assert g.admin("GET", "/usageplans/gold/usage", "startDate=x").status == 400
    assert g.admin("GET", "/usageplans/gold/usage", "keyId=bob").status == 404
    assert g.admin("GET", "/usageplans/nope/usage").status == 404


def test_admin_lists_keys_and_plans(make_gateway):
    g = make_gateway(KEYS)
    keys = json.loads(g.admin("GET", "/apikeys").body)["items"]
    assert [k["name"] for k in keys] == ["alice", "bob", "carol", "dave"]
    carol = [k for k in keys if k["name"] == "carol"][0]
    assert carol == {"name": "carol", "enabled": False, "config_enabled": False,
                     "plans": ["gold"], "stages": ["shop/prod"]}
    assert "sha256" not in json.dumps(keys)                    # no digests on the admin API
    plans = json.loads(g.admin("GET", "/usageplans").body)["items"]
    assert {p["name"] for p in plans} == {"gold", "silver"}
    assert json.loads(g.admin("GET", "/usageplans/silver").body)["keys"] == ["bob"]
    assert g.admin("GET", "/apikeys/nobody").status == 404


def test_enable_disable_without_restart(make_gateway):
    g = make_gateway(KEYS)
    assert g.call("GET", "/prod/k", headers=A)[0] == 200
    r = g.admin("POST", "/apikeys/alice/disable")
    assert r.status == 200 and json.loads(r.body)["enabled"] is False
    assert forbidden(g, "/prod/k", A)
    assert g.admin("POST", "/apikeys/carol/enable").status == 200
    assert g.call("GET", "/prod/k", headers={"x-api-key": "carol-key"})[0] == 200
    # another worker of the node learns it from the shared store on its next refresh
    from proxy.auth.apikeys import KeyRegistry
    other = KeyRegistry(g.gw)
    assert other.identify("alice-key") == "alice" and other.identify("carol-key") is None
    g.run(other.refresh())
    assert other.identify("alice-key") is None and other.identify("carol-key") == "carol"
    g.admin("POST", "/apikeys/alice/enable")
    assert g.call("GET", "/prod/k", headers=A)[0] == 200


def test_keys_create_prints_a_working_line(capsys):
    assert keys_cli.main(["create", "--name", "erin", "--plan", "gold"]) == 0
    out = capsys.readouterr().out
    key = out.split("\n")[1].strip()
    assert len(key) == 40 and key.isalnum()
    assert f"erin: {{sha256: {sha(key)}}}" in out
    assert "usage_plans.gold.keys" in out
    assert keys_cli.main(["keys", "create", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["sha256"] == sha(doc["key"]) and doc["name"].startswith("key-")
    assert keys_cli.main(["create", "--name", "bad name"]) == 2
    # through the real CLI, with the name as a positional argument
    p = subprocess.run([sys.executable, "-m", "proxy.cli", "keys", "create", "frank"],
                       capture_output=True, text=True, check=True)
    key = p.stdout.split("\n")[1].strip()
    assert f"frank: {{sha256: {sha(key)}}}" in p.stdout
    p = subprocess.run([sys.executable, "-m", "proxy.keys_cli", "hash", "--name", "x"],
                       input="secret\n", capture_output=True, text=True, check=True)
    assert p.stdout.strip() == f"x: {{sha256: {sha('secret')}}}"


def test_key_in_two_plans_for_one_stage_is_a_config_error(tmp_path):
    from proxy.config import ConfigError, load_config
    from proxy.gateway import compile_gateway
    p = tmp_path / "g.yaml"
    p.write_text(KEYS.replace("keys: [bob]", "keys: [bob, alice]"))
    with pytest.raises(ConfigError) as e:
        compile_gateway(*load_config(str(p)))
    assert "key 'alice' is already in plan 'gold'" in str(e.value)
