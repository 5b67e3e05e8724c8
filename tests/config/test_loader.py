import os
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
        "gw.yaml:1: server.workers: expected an integer >= 1 or 'auto', got 0",
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


# ---------------------------------------------------------------- YAML parsing: fast path (libyaml) == ruamel

from proxy.config import loader as _loader  # noqa: E402

needs_libyaml = pytest.mark.skipif(_loader._CParser is None, reason="PyYAML's libyaml binding is not installed")

MOCK_BODY = """\
apis:
  shop:
    type: rest
    stages:
      prod: {}
    routes:
      - route: GET /pets/{id}
        integration:
          type: mock
          body:
"""


@pytest.fixture(params=["fast", "ruamel"])
def yaml_path(request, monkeypatch):
    """Run the test through the libyaml fast path and through ruamel alone (no PyYAML)."""
    if request.param == "fast" and _loader._CParser is None:
        pytest.skip("PyYAML's libyaml binding is not installed")
    if request.param == "ruamel":
        monkeypatch.setattr(_loader, "_CParser", None)
    return request.param


def _body(cfg):
    return cfg["apis"]["shop"]["routes"][0]["integration"]["body"]


def _parse_both(text):
    """(fast path result, ruamel result): (data, {path: line}, problems) each."""
    fast = _loader._parse_fast(text)
    assert fast is not None, "the fast path gave up on this text"
    return fast, _loader._parse_ruamel(text, "t.yaml")


def test_scalars_follow_yaml_1_2_as_before(yaml_path):
    body = """\
            yes: yes
            no: no
            on: on
            off: off
            y: y
            t1: true
            t2: True
            t3: TRUE
            f1: false
            f2: False
            t4: tRue
            oct: 0o17
            lead0: 017
            hex: 0x1F
            bin: 0b101
            under: 1_000
            neg: -5
            float: 1.5
            exp: 1e3
            inf: .inf
            date: 2024-01-01
            stamp: 2024-01-01T10:00:00Z
            sexagesimal: 1:20
            null1: ~
            null2: null
            null3:
            quoted_true: 'true'
            quoted_int: "12"
            words: GET /pets/{id}
"""
    cfg, _ = load_config_text(MOCK_BODY + body, "s.yaml")
    got = _body(cfg)
    expected = {
        "yes": "yes", "no": "no", "on": "on", "off": "off", "y": "y",
        "t1": True, "t2": True, "t3": True, "f1": False, "f2": False, "t4": "tRue",
        "oct": 15, "lead0": 17, "hex": 31, "bin": 5, "under": 1000, "neg": -5,
        "float": 1.5, "exp": 1000.0, "inf": float("inf"),
        "date": "2024-01-01", "stamp": "2024-01-01T10:00:00+00:00", "sexagesimal": "1:20",
        "null1": None, "null2": None, "null3": None,
        "quoted_true": "true", "quoted_int": "12", "words": "GET /pets/{id}",
    }
    assert got == expected
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert type(got[key]) is type(value), key  # plain types only: no ruamel subclasses
    if yaml_path == "fast":
        fast, ref = _parse_both(MOCK_BODY + body)
        assert fast == ref


def test_a_yaml_1_1_directive_keeps_yaml_1_1_rules(yaml_path):
    cfg, _ = load_config_text("%YAML 1.1\n---\n" + MOCK_BODY + "            a: yes\n            b: 017\n")
    assert _body(cfg) == {"a": True, "b": 15}


@needs_libyaml
def test_the_fast_path_gives_the_same_data_lines_and_problems_as_ruamel():
    docs = [
        MINIMAL,
        (ROOT / "config" / "gateway.example.yaml").read_text(),
        "# comment\n\n---\napis:\n  a: {x: [1, {y: 2}], z: 'q'}\n  b:\n  - 1\n  -\n    - 2\n  - {c: d}\n",
        "a: |\n  literal\n   text\n\nb: >-\n  folded\n  text\n\n  para\nc: plain\n  multi line\n",
        "a: 'it''s'\nb: \"esc \\u263a \\x41 \\n\"\nc: 'multi\n  line'\n",
        "200: ok\n1.5: x\ntrue: t\n~: n\n2024-01-01: d\n0x10: h\n",
        "a: &m {x: 1, y: 2}\nb:\n  <<: *m\n  y: 3\nc:\n  <<: [*m, {z: 4}]\nd: [*m, *m]\n",
        "a: b\r\nc:\r\n  - d\r\n  - e: f\r\n",
        "",
        "# nothing\n",
    ]
    for text in docs:
        fast, ref = _parse_both(text)
        assert fast[0] == ref[0], text
        assert list(fast[1].items()) == list(ref[1].items()), text
        assert fast[2] == ref[2], text


@needs_libyaml
@pytest.mark.parametrize("text", [
    "a: 1\na: 2\n",                    # duplicate key: ruamel words the error
    "a: [1, 2\n",                      # syntax error
    "a:\tb\n",                         # a tab ruamel refuses and libyaml takes
    "%YAML 1.1\n---\na: yes\n",        # YAML 1.1 rules
    "a: !!str 5\n",                    # tags
    "&k 5: x\n",                       # anchored scalar
    "? [a, b]\n: c\n",                 # complex key
    "a: &x [1, *x]\n",                 # recursive alias
    "a: " + "[" * 250 + "]" * 250 + "\n",  # deep nesting
    "a: 1\n...\n...\n",                # document end markers
    "k: |\n  \n   more\n",             # block scalar ruamel refuses
    "- <<: &b {c: 1}\n- *b\n",          # a top-level list (ruamel merges {} there)
])
def test_the_fast_path_leaves_unusual_text_to_ruamel(text):
    assert _loader._parse_fast(text) is None


def test_duplicate_key_message(yaml_path):
    with pytest.raises(ConfigError) as info:
        load_config_text("apis:\n  shop:\n    type: rest\n    type: http\n", "d.yaml")
    assert str(info.value) == (
        "d.yaml:4:5: invalid YAML: duplicate key 'type' (while constructing a mapping started at line 3)")
    with pytest.raises(ConfigError) as info:
        load_config_text("apis:\n  a: {}\napis: {}\n", "d.yaml")
    assert str(info.value) == (
        "d.yaml:3:1: invalid YAML: duplicate key 'apis' (while constructing a mapping started at line 1)")


def test_duplicate_key_in_a_value_under_a_bad_key_is_still_reported(yaml_path):
    # ruamel builds the value of a non-string key too; the fast path must not skip it
    with pytest.raises(ConfigError) as info:
        load_config_text("true: {a: 1, a: 2}\n", "d.yaml")
    assert str(info.value).startswith("d.yaml:1:14: invalid YAML: duplicate key 'a'")


def test_lines_of_nested_fields(yaml_path):
    text = """\
# a comment first

apis:
  shop:
    type: rest
    stages: {prod: {variables: {a: b}}}
    routes:

      - route: GET /a
        integration: {type: http_proxy,
                      uri: "http://127.0.0.1:1/a"}
      -
        route: GET /b
        integration:
          type: mock
          body: {list: [1,
                        2]}
"""
    _, loc = load_config_text(text, "n.yaml")
    assert loc.line(()) == 3
    assert loc.line(("apis", "shop", "stages", "prod", "variables", "a")) == 6
    assert loc.line(("apis", "shop", "routes", 0)) == 9
    assert loc.line(("apis", "shop", "routes", 0, "integration", "uri")) == 11
    assert loc.line(("apis", "shop", "routes", 1)) == 13
    assert loc.line(("apis", "shop", "routes", 1, "route")) == 13
    assert loc.line(("apis", "shop", "routes", 1, "integration", "body", "list", 1)) == 17
    if yaml_path == "fast":
        fast, ref = _parse_both(text)
        assert fast[1] == ref[1]


def test_gc_is_enabled_again_after_loading():
    import gc
    assert gc.isenabled()
    load_config_text(MINIMAL)
    assert gc.isenabled()
    with pytest.raises(ConfigError):
        load_config_text("a: [\n")
    assert gc.isenabled()


def _routes(n: int, bad: int | None = None) -> str:
    out = [MINIMAL]
    for i in range(1, n):
        kind = "htp_proxy" if i == bad else "http_proxy"
        out.append(f"      - route: GET /r{i}/{{id}}\n"
                   f"        integration: {{type: {kind}, uri: \"http://127.0.0.1:9001/r{i}/{{id}}\"}}\n")
    return "".join(out)


def test_5000_routes_load_through_the_fast_path(monkeypatch):
    text = _routes(5000)
    if _loader._CParser is not None:
        def no_ruamel(*a, **k):
            raise AssertionError("fell back to ruamel")
        monkeypatch.setattr(_loader, "_parse_ruamel", no_ruamel)
    cfg, loc = load_config_text(text, "big.yaml")
    routes = cfg["apis"]["shop"]["routes"]
    assert len(routes) == 5000
    assert routes[4999]["integration"]["uri"] == "http://127.0.0.1:9001/r4999/{id}"
    assert loc.line(("apis", "shop", "routes", 4999)) == 11 + 2 * 4998
    assert loc.line(("apis", "shop", "routes", 4999, "integration", "type")) == 12 + 2 * 4998


def test_an_error_deep_in_5000_routes_names_its_line(yaml_path):
    with pytest.raises(ConfigError) as info:
        load_config_text(_routes(5000, bad=4321), "big.yaml")
    assert info.value.problems == [
        f"big.yaml:{12 + 2 * 4320}: apis.shop.routes[4321].integration.type: expected one of 'http_proxy', "
        "'http', 'mock', 'aws_proxy', got 'htp_proxy'"]


def test_a_duplicate_key_or_syntax_error_deep_in_a_big_file_names_its_line():
    # these go through ruamel (the fast path leaves errors to it), so 1,000 routes suffice
    lines = _routes(1000).splitlines(keepends=True)
    at = 11 + 2 * 800  # the 'route:' line of routes[801]
    assert lines[at - 1].startswith("      - route: GET /r801/")
    dup = lines[:at] + ["        route: GET /again\n"] + lines[at:]
    with pytest.raises(ConfigError) as info:
        load_config_text("".join(dup), "big.yaml")
    assert str(info.value) == (
        f"big.yaml:{at + 1}:9: invalid YAML: duplicate key 'route' "
        f"(while constructing a mapping started at line {at})")
    broken = lines[:at] + ["        integration: {type: mock\n"] + lines[at + 1:]
    with pytest.raises(ConfigError) as info:
        load_config_text("".join(broken), "big.yaml")
    assert str(info.value) == (
        f"big.yaml:{at + 2}:14: invalid YAML: expected ',' or '}}', but got ':' "
        f"(while parsing a flow mapping started at line {at + 1})")


_SCALARS = ["a", "b c", "yes", "on", "true", "False", "tRue", "null", "~", "0", "017", "0o17", "0x1F", "0b11",
            "1_000", "-1", "+1", "1.5", "-.5", "1e3", ".inf", ".nan", "2024-01-01", "2024-01-01T10:00:00Z", "12:30",
            "http://h:1/p?q=1&r=2", "GET /pets/{id}", "a#b", "x:y", "-x", "=", "<<", "é", "$default", "500ms", ""]
_KEYS = ["a", "b", "route", "x y", "200", "1.5", "true", "null", "2024-01-01", "0o7", "é", "$default", "k"]


def _yaml_docs():
    """Hypothesis strategy: YAML texts of nested data, in block and flow style, with tricky scalars."""
    from hypothesis import strategies as st

    scalar = st.tuples(st.sampled_from(_SCALARS), st.sampled_from(["plain", "'", '"']))
    tree = st.recursive(
        scalar,
        lambda inner: st.one_of(
            st.tuples(st.just("seq"), st.lists(inner, max_size=3), st.booleans()),
            st.tuples(st.just("map"), st.dictionaries(st.sampled_from(_KEYS), inner, max_size=3), st.booleans()),
        ),
        max_leaves=12,
    )

    def flow(node):
        if node[0] == "seq":
            return "[" + ", ".join(flow(x) for x in node[1]) + "]"
        if node[0] == "map":
            return "{" + ", ".join(f"{k}: {flow(v)}" for k, v in node[1].items()) + "}"
        text, style = node
        if style == "'":
            return "'" + text.replace("'", "''") + "'"
        if style == '"':
            return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return text if text not in ("", "-x") else "''"

    def block(node, indent):
        pad = " " * indent
        if node[0] in ("seq", "map") and node[1] and not node[2]:
            if node[0] == "seq":
                return "\n" + "".join(f"{pad}-{block(x, indent + 2)}" for x in node[1])
            return "\n" + "".join(f"{pad}{k}:{block(v, indent + 2)}" for k, v in node[1].items())
        return " " + flow(node) + "\n"

    return tree.map(lambda node: block(("map", {"top": node}, False), 0))


@needs_libyaml
def test_fast_path_equals_ruamel_on_generated_documents():
    from hypothesis import given, settings, HealthCheck

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(_yaml_docs())
    def check(text):
        fast = _loader._parse_fast(text)
        seen.append(fast is not None)
        try:
            ref = _loader._parse_ruamel(text, "t.yaml")
        except ConfigError:
            assert fast is None, text  # what ruamel refuses, the fast path must not accept
            return
        if fast is not None:
            assert fast[0] == ref[0] and list(fast[1].items()) == list(ref[1].items()) and fast[2] == ref[2], text

    seen: list[bool] = []
    check()
    assert sum(seen) > len(seen) // 2  # most of them did go through the fast path


# ---------------------------------------------------------------- workers: auto

def test_workers_auto_and_bad_workers():
    cfg, _ = load_config_text("server: {workers: auto}\napis: {}\n", "gw.yaml")
    assert cfg["server"]["workers"] == "auto"
    for bad, expected in (("two", "expected an integer >= 1 or 'auto', got 'two'"),
                          ("-3", "expected an integer >= 1 or 'auto', got -3")):
        with pytest.raises(ConfigError) as info:
            load_config_text(f"server: {{workers: {bad}}}\napis: {{}}\n", "gw.yaml")
        assert info.value.problems == [f"gw.yaml:1: server.workers: {expected}"]


def test_resolve_workers_counts_the_cpus_this_process_may_use():
    from proxy.cli import resolve_workers
    assert resolve_workers(3) == 3 and resolve_workers("2") == 2
    assert resolve_workers("auto") == len(os.sched_getaffinity(0))
