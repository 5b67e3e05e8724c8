import json
from pathlib import Path

import jsonschema
import pytest

from proxy.config import (
    ConfigError, Locator, format_path, load_config, load_config_text, load_schema, parse_duration,
)

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = """\
apis:
  shop:
    type: rest
    stages:
      prod: {}
    routes:
      - route: GET /pets/{id}
        integration:
          type: http_proxy
          uri: http://127.0.0.1:9001/pets/{id}
"""


# ---------------------------------------------------------------- schema file


def test_packaged_schema_is_a_byte_identical_copy_of_config_schema():
    source = ROOT / "config" / "schema.json"
    packaged = ROOT / "proxy" / "schema.json"
    assert source.is_file()
    if packaged.is_file():
        assert packaged.read_bytes() == source.read_bytes(), "run: cp config/schema.json proxy/schema.json"


def test_schema_is_a_valid_draft_2020_12_schema():
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema == json.loads((ROOT / "config" / "schema.json").read_text())


# ---------------------------------------------------------------- example config


def test_example_config_loads():
    example = ROOT / "config" / "gateway.example.yaml"
    if not example.is_file():
        pytest.skip("config/gateway.example.yaml not written yet")
    cfg, loc = load_config(str(example))
    assert cfg["apis"]
    assert loc.file == str(example)


# ---------------------------------------------------------------- defaults


def test_defaults_are_applied():
    cfg, _ = load_config_text(MINIMAL)
    assert cfg["server"] == {
        "listen": "0.0.0.0:8080", "workers": 1, "admin": None, "request_id_header": "x-request-id",
        "max_body_bytes": 10485760, "max_header_bytes": 16384, "trusted_proxies": [], "access_log": True,
        "frontend": "native", "keepalive_timeout": 75.0, "header_timeout": 60.0,
    }
    assert cfg["state"] == {"backend": "memory", "on_failure": "open", "timeout": 0.25}
    assert cfg["upstream"] == {"max_connections": 256, "idle_timeout": 60.0, "connect_timeout": 5.0}
    assert cfg["throttle"] == {"rate": 10000, "burst": 5000}
    assert cfg["functions"] == cfg["vpc_links"] == cfg["api_keys"] == cfg["usage_plans"] == {}
    api = cfg["apis"]["shop"]
    assert api["endpoint"] == "regional"
    assert api["binary_media_types"] == [] and api["source_cidrs"] == []
    assert api["cache_invalidation"] == {"require_authorization": True, "unauthorized": "ignore"}
    assert api["stages"]["prod"] == {
        "variables": {}, "cache": {"enabled": False, "ttl": 300, "capacity_mb": 64, "hit_header": False,
                                   "max_entry_bytes": 1048576},
    }
    route = api["routes"][0]
    assert route["api_key_required"] is False
    assert route["integration"] == {
        "type": "http_proxy", "uri": "http://127.0.0.1:9001/pets/{id}", "timeout": 29.0, "pass_host": False,
    }
    assert "throttle" not in route and "cache" not in route and "policy" not in api


def test_http_api_gets_a_default_stage_and_payload_format_2():
    cfg, _ = load_config_text("""\
functions:
  hello: {handler: app.handler}
apis:
  h:
    type: http
    routes:
      - {route: $default, integration: {type: aws_proxy, function: hello}}
      - {route: GET /m, integration: {type: mock}}
""")
    api = cfg["apis"]["h"]
    assert list(api["stages"]) == ["$default"]
    assert api["stages"]["$default"]["variables"] == {}
    assert api["routes"][0]["integration"]["payload_format"] == "2.0"
    assert api["routes"][1]["integration"]["status"] == 200
    assert api["routes"][1]["integration"]["headers"] == {}
    fn = cfg["functions"]["hello"]
    assert (fn["runtime"], fn["timeout"], fn["memory_mb"], fn["concurrency"], fn["environment"]) == (
        "process", 3.0, 128, 10, {})


def test_rest_aws_proxy_defaults_to_payload_format_1():
    cfg, _ = load_config_text(MINIMAL.replace(
        "type: http_proxy\n          uri: http://127.0.0.1:9001/pets/{id}", "type: aws_proxy\n          function: f"))
    assert cfg["apis"]["shop"]["routes"][0]["integration"]["payload_format"] == "1.0"


def test_vpc_link_targets_are_normalised_and_health_check_filled():
    cfg, _ = load_config_text(MINIMAL + """\
vpc_links:
  orders:
    targets: ["10.0.0.2:8080", "unix:/run/orders.sock", {address: "[::1]:81", weight: 3}]
    health_check: {path: /health, interval: 500ms}
""")
    link = cfg["vpc_links"]["orders"]
    assert link["targets"] == [
        {"address": "10.0.0.2:8080", "weight": 1},
        {"address": "unix:/run/orders.sock", "weight": 1},
        {"address": "[::1]:81", "weight": 3},
    ]
    assert link["health_check"] == {"path": "/health", "interval": 0.5, "timeout": 2.0,
                                    "healthy_threshold": 2, "unhealthy_threshold": 3}
    assert link["balance"] == "round_robin" and link["private"] is True
    assert "outlier" not in link


def test_function_code_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "gw.yaml"
    path.write_text(MINIMAL + "functions:\n  f: {handler: app.handler, code: ./functions}\n"
                    "  g: {handler: app.handler, code: /srv/fn}\n")
    cfg, loc = load_config(str(path))
    assert cfg["functions"]["f"]["code"] == str(tmp_path / "conf" / "functions")
    assert cfg["functions"]["g"]["code"] == "/srv/fn"
    assert loc.file == str(path)


# ---------------------------------------------------------------- durations


@pytest.mark.parametrize("text,seconds", [
    ("3s", 3.0), ("500ms", 0.5), ("29s", 29.0), ("1m", 60.0), ("1h", 3600.0), ("1.5s", 1.5),
    (2, 2.0), (0.25, 0.25), (0, 0.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["3", "3 seconds", "-1s", "s", "", True, None, -1, [1]])
def test_parse_duration_rejects(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize("given,seconds", [("500ms", 0.5), ("29s", 29.0), (2, 2.0), ("50ms", 0.05), (29, 29.0)])
def test_integration_timeout_becomes_float_seconds(given, seconds):
    cfg, _ = load_config_text(MINIMAL.replace("uri: http://127.0.0.1:9001/pets/{id}",
                                              f"uri: http://127.0.0.1:9001/pets/{{id}}\n          timeout: {given}"))
    timeout = cfg["apis"]["shop"]["routes"][0]["integration"]["timeout"]
    assert isinstance(timeout, float) and timeout == pytest.approx(seconds)


@pytest.mark.parametrize("given", ["49ms", "30s", "1m", 30])
def test_integration_timeout_out_of_range(given):
    text = MINIMAL.replace("uri: http://127.0.0.1:9001/pets/{id}",
                           f"uri: http://127.0.0.1:9001/pets/{{id}}\n          timeout: {given}")
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "t.yaml")
    assert str(info.value) == (
        f"t.yaml:11: apis.shop.routes[0].integration.timeout: expected a duration between 50ms and 29s, "
        f"got {given!r}")


# ---------------------------------------------------------------- messages and Locator


def test_all_problems_are_reported_together_in_line_order():
    text = """\
server: {workers: 0, listen: nowhere}
apis:
  shop:
    type: http
    routes:
      - route: GET /a
        integration: {type: htp}
      - route: GET /b
        integrashun: {type: mock}
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "gw.yaml")
    assert info.value.problems == [
        "gw.yaml:1: server.listen: expected host:port (or [ipv6]:port), got 'nowhere'",
        "gw.yaml:1: server.workers: expected an integer >= 1, got 0",
        "gw.yaml:7: apis.shop.routes[0].integration.type: expected one of 'http_proxy', 'http', 'mock', "
        "'aws_proxy', got 'htp'",
        "gw.yaml:8: apis.shop.routes[1]: missing required field 'integration'",
        "gw.yaml:9: apis.shop.routes[1]: unknown field 'integrashun' (did you mean 'integration'?)",
    ]
    assert str(info.value) == "\n".join(info.value.problems)


def test_locator_maps_paths_to_lines():
    cfg, loc = load_config_text(MINIMAL, "gw.yaml")
    assert loc.line(()) == 1
    assert loc.line(("apis", "shop")) == 2
    assert loc.line(("apis", "shop", "routes", 0)) == 7
    assert loc.line(("apis", "shop", "routes", 0, "integration", "uri")) == 10
    # fields filled by defaults have no line: the nearest enclosing one is used
    assert loc.line(("apis", "shop", "routes", 0, "integration", "timeout")) == 8
    assert loc.line(("server", "listen")) == 1
    assert loc.where(("apis", "shop", "routes", 0, "route")) == "gw.yaml:7: apis.shop.routes[0].route"
    assert loc.problem(("apis", "shop", "routes", 0, "integration", "uri"), "unknown host") == (
        "gw.yaml:10: apis.shop.routes[0].integration.uri: unknown host")
    assert loc.problem(("apis", "shop", "stages"), "x", at=("apis", "shop", "stages", "prod")) == (
        "gw.yaml:5: apis.shop.stages: x")
    assert loc.sort([(("apis", "shop", "routes", 0), "b"), (("apis",), "a")]) == [
        "gw.yaml:1: apis: a", "gw.yaml:7: apis.shop.routes[0]: b"]


def test_format_path_quotes_keys_that_are_not_plain_names():
    assert format_path(("apis", "shop", "routes", 3, "x")) == "apis.shop.routes[3].x"
    assert format_path(("apis", "shop", "stages", "$default")) == "apis.shop.stages.$default"
    assert format_path(("usage_plans", "gold", "route_throttle", "GET /pets")) == (
        'usage_plans.gold.route_throttle["GET /pets"]')
    assert format_path(()) == ""


def test_anchors_and_merge_keys_work_and_keep_lines():
    text = """\
apis:
  shop:
    type: rest
    stages:
      prod: {throttle: &t {rate: 10, burst: 20}}
      beta: {throttle: *t}
    routes:
      - route: GET /a
        integration: &backend
          type: http_proxy
          uri: http://127.0.0.1:1/a
          timeout: 2s
      - route: GET /b
        integration:
          <<: *backend
          uri: http://127.0.0.1:1/b
"""
    cfg, loc = load_config_text(text, "a.yaml")
    stages = cfg["apis"]["shop"]["stages"]
    assert stages["beta"]["throttle"] == stages["prod"]["throttle"] == {"rate": 10, "burst": 20}
    b = cfg["apis"]["shop"]["routes"][1]["integration"]
    assert b == {"type": "http_proxy", "uri": "http://127.0.0.1:1/b", "timeout": 2.0, "pass_host": False}
    assert loc.line(("apis", "shop", "routes", 1, "integration", "uri")) == 16
    # merged keys have no line of their own: the mapping that merges them is named
    assert loc.line(("apis", "shop", "routes", 1, "integration", "type")) == 14


def test_yaml_syntax_error_names_line_and_column():
    with pytest.raises(ConfigError) as info:
        load_config_text("apis:\n  shop: [1, 2\n  x: 1\n", "s.yaml")
    msg = str(info.value)
    assert msg.startswith("s.yaml:3:4: invalid YAML: ")
    assert "\n" not in msg


def test_missing_file_and_bad_encoding(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(str(tmp_path / "nope.yaml"))
    assert str(info.value) == f"{tmp_path / 'nope.yaml'}: cannot read the config file: No such file or directory"
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"apis: {}\nserver: {listen: \"\xff\"}\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(bad))
    assert str(info.value) == f"{bad}:2: the config file is not valid UTF-8"


def test_config_error_accepts_a_single_string():
    e = ConfigError("gw.yaml:3: apis.x: unknown function 'f'")
    assert e.problems == ["gw.yaml:3: apis.x: unknown function 'f'"]
    assert str(e) == "gw.yaml:3: apis.x: unknown function 'f'"


def test_a_locator_without_lines_says_line_1():
    loc = Locator("gw.yaml")
    assert loc.problem(("apis", "x"), "boom") == "gw.yaml:1: apis.x: boom"
    assert loc.problem((), "empty") == "gw.yaml:1: empty"
