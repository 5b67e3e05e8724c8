"""Resource policy and private endpoints (lifecycle step 3)."""
from __future__ import annotations

import http.client
import json

import pytest

from proxy.config import ConfigError, load_config_text
from proxy.gateway import compile_gateway
from proxy.policy import NetworkSet, Rule, parse_client
from tests.helpers import GatewayProcess


# -- the matcher ----------------------------------------------------------------------------------

def test_network_set_v4_v6_and_mapped():
    s = NetworkSet(["10.0.0.0/8", "192.168.1.7", "fd00::/8"])
    assert s.contains_addr(parse_client("10.200.3.4"))
    assert s.contains_addr(parse_client("192.168.1.7"))
    assert not s.contains_addr(parse_client("192.168.1.8"))
    assert s.contains_addr(parse_client("fd12::1"))
    assert not s.contains_addr(parse_client("fe80::1"))
    assert s.contains_addr(parse_client("::ffff:10.1.1.1"))     # IPv4-mapped IPv6 is IPv4
    assert not s.contains_addr(parse_client(""))                # unix-socket client: no address
    assert not s.contains_addr(parse_client("not-an-ip"))


def test_rule_deny_wins_and_empty_allow_means_everyone():
    r = Rule(["10.0.0.0/8"], ["10.9.0.0/16"], "t")
    assert r.permits(parse_client("10.1.1.1"))
    assert not r.permits(parse_client("10.9.1.1"))
    assert not r.permits(parse_client("11.0.0.1"))
    r = Rule([], ["10.9.0.0/16"], "t")
    assert r.permits(parse_client("11.0.0.1"))
    assert not r.permits(parse_client("10.9.0.1"))


def test_private_endpoint_without_source_cidrs_is_a_config_error():
    text = """
apis:
  shop:
    type: rest
    endpoint: private
    stages: {prod: {}}
    routes:
      - route: GET /x
        integration: {type: mock}
  other:
    type: rest
    base_path: /other
    source_cidrs: [10.0.0.0/8]
    stages: {prod: {}}
    routes:
      - route: GET /x
        integration: {type: mock}
"""
    cfg, loc = load_config_text(text, "gw.yaml")
    with pytest.raises(ConfigError) as ei:
        compile_gateway(cfg, loc)
    msg = str(ei.value)
    assert "gw.yaml:5: apis.shop.endpoint: a private endpoint needs 'source_cidrs'" in msg
    assert "gw.yaml:13: apis.other.source_cidrs: 'source_cidrs' applies to private endpoints only" in msg


def test_routes_without_lists_get_no_stage():
    text = """
apis:
  shop:
    type: rest
    stages: {prod: {}}
    routes:
      - route: GET /open
        integration: {type: mock}
      - route: GET /closed
        integration: {type: mock}
        policy: {deny: [0.0.0.0/0]}
"""
    import proxy.policy as policy
    from proxy.gateway import RouteBuild
    cfg, loc = load_config_text(text, "gw.yaml")
    api = cfg["apis"]["shop"]
    rbs = [RouteBuild(None, "shop", api, "prod", {}, r, i, "GET", r["route"][4:], loc)
           for i, r in enumerate(api["routes"])]
    assert policy.build_stage(rbs[0]) is None
    assert policy.build_stage(rbs[1]) is not None


# -- end to end: client addresses from 127.0.0.0/8 (Linux answers on all of it) -------------------

CONFIG = """
server:
  trusted_proxies: [127.0.0.2/32]
apis:
  internal:
    type: rest
    endpoint: private
    source_cidrs: [127.0.0.1/32, 127.0.10.0/24]
    stages: {prod: {}}
    routes:
      - route: GET /hello
        integration: {type: mock, body: {ok: true}}
      - route: GET /strict
        integration: {type: mock, body: {ok: true}}
        policy: {deny: [127.0.10.5/32]}
  public:
    type: http
    base_path: /pub
    policy: {deny: [127.0.0.66/32]}
    routes:
      - route: GET /hi
        integration: {type: mock, body: "hi"}
      - route: GET /lan-only
        integration: {type: mock, body: "lan"}
        policy: {allow: [127.0.10.0/24]}
"""


@pytest.fixture(scope="module")
def gw():
    g = GatewayProcess(CONFIG)
    with g:
        yield g


def call(gw, path, source="127.0.0.1", headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


FORBIDDEN = (403, b'{"message":"Forbidden"}')


def test_private_endpoint_allows_configured_networks(gw):
    assert call(gw, "/prod/hello", "127.0.0.1") == (200, b'{"ok":true}')
    assert call(gw, "/prod/hello", "127.0.10.77")[0] == 200


def test_private_endpoint_forbids_everyone_else(gw):
    assert call(gw, "/prod/hello", "127.0.0.3") == FORBIDDEN
    assert call(gw, "/prod/hello", "127.0.11.1") == FORBIDDEN


def test_spoofed_forwarded_for_from_untrusted_peer_changes_nothing(gw):
    # an outsider claiming to be an allowed client
    assert call(gw, "/prod/hello", "127.0.0.3", {"X-Forwarded-For": "127.0.0.1"}) == FORBIDDEN
    assert call(gw, "/prod/hello", "127.0.0.3", {"X-Forwarded-For": "127.0.10.1, 127.0.0.2"}) == FORBIDDEN
    # an allowed client claiming to be someone else is still judged by its socket address
    assert call(gw, "/prod/hello", "127.0.0.1", {"X-Forwarded-For": "127.0.0.3"})[0] == 200
    assert call(gw, "/prod/strict", "127.0.10.6", {"X-Forwarded-For": "127.0.10.5"})[0] == 200


def test_forwarded_for_from_trusted_proxy_is_believed(gw):
    assert call(gw, "/prod/hello", "127.0.0.2", {"X-Forwarded-For": "127.0.10.9"})[0] == 200
    assert call(gw, "/prod/hello", "127.0.0.2", {"X-Forwarded-For": "127.0.0.3"}) == FORBIDDEN
    assert call(gw, "/prod/hello", "127.0.0.2") == FORBIDDEN   # the proxy itself is not allowed


def test_route_policy_deny_inside_private_api(gw):
    assert call(gw, "/prod/strict", "127.0.10.5") == FORBIDDEN
    assert call(gw, "/prod/strict", "127.0.10.6")[0] == 200


def test_api_and_route_policy_on_a_regional_api(gw):
    assert call(gw, "/pub/hi", "127.0.0.3") == (200, b"hi")
    assert call(gw, "/pub/hi", "127.0.0.66") == FORBIDDEN            # api deny
    assert call(gw, "/pub/lan-only", "127.0.10.1") == (200, b"lan")
    assert call(gw, "/pub/lan-only", "127.0.0.1") == FORBIDDEN        # route allow list
    status, body = call(gw, "/pub/lan-only", "127.0.0.66")
    assert (status, json.loads(body)) == (403, {"message": "Forbidden"})


def test_refused_client_learns_nothing_about_which_routes_exist(gw):
    # existing route, unknown path, wrong method, unknown stage, bad path: all the same 403
    for path in ("/prod/hello", "/prod/no-such-route", "/prod/hello/extra", "/nostage/hello",
                 "/prod/a/..%2fadmin"):
        assert call(gw, path, "127.0.0.3") == FORBIDDEN, path
    assert call(gw, "/pub/nothing-here", "127.0.0.66") == FORBIDDEN
    # allowed clients still get the API type's own answers for what does not exist
    assert call(gw, "/prod/no-such-route", "127.0.0.1") == (403, b'{"message":"Missing Authentication Token"}')
    assert call(gw, "/prod/a/..%2fadmin", "127.0.0.1")[0] == 400
    assert call(gw, "/pub/nothing-here", "127.0.0.3") == (404, b'{"message":"Not Found"}')
