"""gwcore router: every rule, run on both twins (compiled and pure), plus a twin-agreement
property test and an independent brute-force oracle."""
from __future__ import annotations

import os
import re
from urllib.parse import unquote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gwcore
from gwcore.errors import RouteConflictError, RouteSyntaxError

TWINS = gwcore.twins("router")
IMPLS = {name: mod for name, mod in TWINS}


@pytest.fixture(params=[name for name, _ in TWINS])
def rt(request):
    return IMPLS[request.param]


def build(mod, routes, default=None):
    r = mod.Router()
    for i, spec in enumerate(routes):
        method, path = spec.split(" ", 1)
        r.add(method, path, spec)
    if default is not None:
        r.set_default(default)
    r.freeze()
    return r


# ---------------------------------------------------------------- module surface

def test_constants_and_api(rt):
    assert (rt.MATCH, rt.NOT_FOUND, rt.METHOD_NOT_ALLOWED, rt.BAD_PATH) == (0, 1, 2, 3)
    assert rt.RouteConflictError is RouteConflictError
    assert rt.RouteSyntaxError is RouteSyntaxError
    assert issubclass(RouteConflictError, ValueError) and issubclass(RouteSyntaxError, ValueError)
    r = rt.Router()
    for name in ("add", "set_default", "freeze", "match", "routes"):
        assert callable(getattr(r, name))


def test_compiled_twin_is_built_under_ci():
    if os.environ.get("CI") == "true":
        assert "cython" in IMPLS, "gwcore.router is not compiled (python setup.py build_ext --inplace)"
    if "cython" in IMPLS:
        assert IMPLS["cython"].__file__.endswith((".so", ".pyd"))


# ---------------------------------------------------------------- matching, table-driven

TABLE = [
    "GET /",
    "GET /pets",
    "POST /pets",
    "GET /pets/{id}",
    "DELETE /pets/{petId}",
    "GET /pets/mine",
    "GET /pets/{id}/photos/{photo}",
    "ANY /files/{proxy+}",
    "GET /files/static/logo",
    "GET /a/b/c",
    "GET /a/{x}/d",
    "GET /a/{x}/{y}/e",
    "GET /café",
    "GET /x y/{v}",
    "HEAD /only-head",
    "ANY /any",
    "GET /any",
    "ANY /g/{rest+}",
    "GET /g/{p}",
    "GET /g/{p}/fixed",
    "PUT /deep/{a}/{b}/{c}",
    "GET /mix/{id}",
    "ANY /mix/special",
]

M, NF, NA, BAD = 0, 1, 2, 3

CASES = [
    # (method, path, status, route spec or None, params)
    ("GET", "/", M, "GET /", {}),
    ("GET", "/pets", M, "GET /pets", {}),
    ("POST", "/pets", M, "POST /pets", {}),
    ("GET", "/pets/", M, "GET /pets", {}),                       # trailing slash ignored
    ("GET", "/pets/7", M, "GET /pets/{id}", {"id": "7"}),
    ("GET", "/pets/7/", M, "GET /pets/{id}", {"id": "7"}),
    ("DELETE", "/pets/7", M, "DELETE /pets/{petId}", {"petId": "7"}),  # per-route names
    ("GET", "/pets/mine", M, "GET /pets/mine", {}),                 # static > param
    ("DELETE", "/pets/mine", M, "DELETE /pets/{petId}", {"petId": "mine"}),  # backtrack on method
    ("GET", "/pets/7/photos/9", M, "GET /pets/{id}/photos/{photo}", {"id": "7", "photo": "9"}),
    ("PATCH", "/pets/7", NA, None, None),
    ("PATCH", "/pets", NA, None, None),
    ("HEAD", "/pets", NA, None, None),                             # HEAD is not implied by GET
    ("HEAD", "/only-head", M, "HEAD /only-head", {}),
    ("GET", "/only-head", NA, None, None),
    ("GET", "/files/a", M, "ANY /files/{proxy+}", {"proxy": "a"}),
    ("POST", "/files/a/b/c", M, "ANY /files/{proxy+}", {"proxy": "a/b/c"}),
    ("GET", "/files/a/b/c/", M, "ANY /files/{proxy+}", {"proxy": "a/b/c"}),
    ("GET", "/files/static/logo", M, "GET /files/static/logo", {}),
    ("POST", "/files/static/logo", M, "ANY /files/{proxy+}", {"proxy": "static/logo"}),
    ("GET", "/files/static", M, "ANY /files/{proxy+}", {"proxy": "static"}),
    ("GET", "/files", NF, None, None),                              # greedy needs >= 1 segment
    ("GET", "/files/a%2Fb", BAD, None, None),
    ("GET", "/files/a%20b/c%3Fd", M, "ANY /files/{proxy+}", {"proxy": "a b/c?d"}),
    ("GET", "/a/b/c", M, "GET /a/b/c", {}),
    ("GET", "/a/b/d", M, "GET /a/{x}/d", {"x": "b"}),               # backtracking
    ("GET", "/a/b/c/e", M, "GET /a/{x}/{y}/e", {"x": "b", "y": "c"}),
    ("GET", "/a/b/zzz", NF, None, None),
    ("GET", "/café", M, "GET /café", {}),
    ("GET", "/caf%C3%A9", M, "GET /café", {}),                      # decoded vs literal
    ("GET", "/caf%c3%a9/", M, "GET /café", {}),
    ("GET", "/x%20y/%F0%9F%90%8D", M, "GET /x y/{v}", {"v": "\U0001f40d"}),
    ("GET", "/x y/1", M, "GET /x y/{v}", {"v": "1"}),
    ("GET", "/any", M, "GET /any", {}),                            # exact beats ANY
    ("POST", "/any", M, "ANY /any", {}),
    ("GET", "/g/1", M, "GET /g/{p}", {"p": "1"}),                   # param > greedy
    ("POST", "/g/1", M, "ANY /g/{rest+}", {"rest": "1"}),
    ("GET", "/g/1/fixed", M, "GET /g/{p}/fixed", {"p": "1"}),
    ("GET", "/g/1/other", M, "ANY /g/{rest+}", {"rest": "1/other"}),
    ("GET", "/deep/1/2/3", NA, None, None),
    ("PUT", "/deep/1/2/3", M, "PUT /deep/{a}/{b}/{c}", {"a": "1", "b": "2", "c": "3"}),
    ("GET", "/mix/special", M, "ANY /mix/special", {}),             # more specific path wins over exact method
    ("GET", "/mix/7", M, "GET /mix/{id}", {"id": "7"}),
    # empty segments never match (no merging of slashes)
    ("GET", "//pets", NF, None, None),
    ("GET", "/pets//", NF, None, None),
    ("GET", "/a//c", NF, None, None),
    ("GET", "//", NF, None, None),
    ("GET", "/files//a", NF, None, None),
    # bad paths
    ("GET", "", BAD, None, None),
    ("GET", "pets", BAD, None, None),
    ("GET", "*", BAD, None, None),
    ("GET", "/a/..%2fadmin", BAD, None, None),
    ("GET", "/a/%2e%2e/admin", BAD, None, None),
    ("GET", "/a/%2E/admin", BAD, None, None),
    ("GET", "/a/./b", BAD, None, None),
    ("GET", "/a/../b", BAD, None, None),
    ("GET", "/..", BAD, None, None),
    ("GET", "/.", BAD, None, None),
    ("GET", "/./", BAD, None, None),
    ("GET", "//..", BAD, None, None),                              # bad wins over empty
    ("GET", "/pets/%", BAD, None, None),
    ("GET", "/pets/%4", BAD, None, None),
    ("GET", "/pets/%zz", BAD, None, None),
    ("GET", "/pets/%C3", BAD, None, None),                         # truncated UTF-8
    ("GET", "/pets/%FF", BAD, None, None),
    ("GET", "/pets/%C0%AE", BAD, None, None),                      # overlong "."
    ("GET", "/pets/%ED%A0%80", BAD, None, None),                   # encoded surrogate
    ("GET", "/pets/\ud800", BAD, None, None),                      # lone surrogate in raw path
    ("GET", "/pets/%00", BAD, None, None),
    ("GET", "/pets/a\x00", BAD, None, None),
    ("GET", "/pets/%0a", BAD, None, None),
    ("GET", "/pets/a\tb", BAD, None, None),
    ("GET", "/pets/%7F", BAD, None, None),
    ("GET", "/pets/%5C", BAD, None, None),
    ("GET", "/pets/a\\b", BAD, None, None),
    ("GET", "/pets/%2F", BAD, None, None),
    # allowed odd-but-valid segments
    ("GET", "/pets/...", M, "GET /pets/{id}", {"id": "..."}),
    ("GET", "/pets/%2e%2e%2e", M, "GET /pets/{id}", {"id": "..."}),
    ("GET", "/pets/.hidden", M, "GET /pets/{id}", {"id": ".hidden"}),
    ("GET", "/pets/a+b", M, "GET /pets/{id}", {"id": "a+b"}),       # '+' is not a space
    ("GET", "/pets/%25", M, "GET /pets/{id}", {"id": "%"}),
    ("GET", "/pets/%2541", M, "GET /pets/{id}", {"id": "%41"}),     # decoded once only
    ("GET", "/pets/%C3%A9t%C3%A9", M, "GET /pets/{id}", {"id": "été"}),
    ("GET", "/pets/été", M, "GET /pets/{id}", {"id": "été"}),
    ("GET", "/%70ets", M, "GET /pets", {}),                         # encoded unreserved char
]


@pytest.mark.parametrize("method,path,status,spec,params", CASES,
                         ids=[f"{c[0]} {c[1]!r}" for c in CASES])
def test_match_table(rt, method, path, status, spec, params):
    r = build(rt, TABLE)
    assert r.match(method, path) == (status, spec, params)


def test_not_found_without_catch_all(rt):
    r = build(rt, ["GET /pets", "GET /pets/{id}", "ANY /files/{proxy+}"])
    assert r.match("GET", "/files") == (NF, None, None)
    assert r.match("GET", "/files/") == (NF, None, None)
    assert r.match("GET", "/nothing") == (NF, None, None)
    assert r.match("GET", "/") == (NF, None, None)
    assert r.match("GET", "/pets/1/2") == (NF, None, None)


def test_root_route_and_trailing_slash(rt):
    r = build(rt, ["GET /", "GET /a/"])
    assert r.match("GET", "/") == (M, "GET /", {})
    assert r.match("GET", "/a") == (M, "GET /a/", {})
    assert r.match("GET", "/a/") == (M, "GET /a/", {})
    assert r.match("GET", "/a//") == (NF, None, None)


def test_greedy_at_root(rt):
    r = build(rt, ["ANY /{proxy+}"])
    assert r.match("GET", "/") == (NF, None, None)
    assert r.match("GET", "/x") == (M, "ANY /{proxy+}", {"proxy": "x"})
    assert r.match("GET", "/x/y%2Ez/") == (M, "ANY /{proxy+}", {"proxy": "x/y.z"})


def test_method_not_allowed_vs_not_found_with_backtracking(rt):
    # the static branch has the path but not the method; the param branch has neither
    r = build(rt, ["GET /a/b", "POST /a/{x}/c"])
    assert r.match("POST", "/a/b") == (NA, None, None)
    assert r.match("GET", "/a/z") == (NF, None, None)
    assert r.match("POST", "/a/b/c") == (M, "POST /a/{x}/c", {"x": "b"})
    assert r.match("GET", "/a/b/c") == (NA, None, None)


def test_less_specific_route_with_the_method_beats_405(rt):
    # GET /deep/1/2/3 reaches PUT /deep/{a}/{b}/{c} (no GET), then backtracks to the greedy
    r = build(rt, TABLE + ["ANY /{top+}"])
    assert r.match("GET", "/deep/1/2/3") == (M, "ANY /{top+}", {"top": "deep/1/2/3"})
    assert r.match("PATCH", "/pets") == (M, "ANY /{top+}", {"top": "pets"})
    assert r.match("GET", "/files") == (M, "ANY /{top+}", {"top": "files"})
    assert r.match("GET", "/pets/mine") == (M, "GET /pets/mine", {})
    assert r.match("GET", "/") == (M, "GET /", {})


def test_methods_are_exact(rt):
    r = build(rt, ["GET /x", "OPTIONS /y"])
    assert r.match("get", "/x") == (NA, None, None)
    assert r.match("HEAD", "/x") == (NA, None, None)
    assert r.match("OPTIONS", "/x") == (NA, None, None)
    assert r.match("OPTIONS", "/y") == (M, "OPTIONS /y", {})


def test_any_route_answers_every_method(rt):
    r = build(rt, ["ANY /x"])
    for method in ("GET", "HEAD", "POST", "DELETE", "PURGE", "ANY", "get"):
        assert r.match(method, "/x") == (M, "ANY /x", {})


# ---------------------------------------------------------------- $default

def test_default_catches_not_found_and_not_allowed_but_not_bad_path(rt):
    r = build(rt, ["GET /pets", "GET /pets/{id}"], default="DEFAULT")
    assert r.match("GET", "/pets") == (M, "GET /pets", {})
    assert r.match("POST", "/pets") == (M, "DEFAULT", {})
    assert r.match("GET", "/nothing/here") == (M, "DEFAULT", {})
    assert r.match("GET", "//pets") == (M, "DEFAULT", {})
    assert r.match("GET", "/") == (M, "DEFAULT", {})
    assert r.match("GET", "/a/..%2fadmin") == (BAD, None, None)
    assert r.match("GET", "relative") == (BAD, None, None)


def test_default_alone_and_fresh_params(rt):
    r = rt.Router()
    r.set_default(None)
    status, value, params = r.match("DELETE", "/x/y")
    assert (status, value, params) == (M, None, {})
    params["mutated"] = "1"
    assert r.match("DELETE", "/x/y") == (M, None, {})
    assert r.routes() == []


def test_params_dict_is_fresh_per_call(rt):
    r = build(rt, ["GET /p/{id}", "GET /s"])
    _, _, p1 = r.match("GET", "/p/1")
    p1["id"] = "changed"
    assert r.match("GET", "/p/1") == (M, "GET /p/{id}", {"id": "1"})
    _, _, s1 = r.match("GET", "/s")
    s1["x"] = "y"
    assert r.match("GET", "/s") == (M, "GET /s", {})


def test_set_default_twice_is_a_conflict(rt):
    r = rt.Router()
    r.set_default(1, label="a.yaml:3 $default")
    with pytest.raises(RouteConflictError) as e:
        r.set_default(2, label="b.yaml:9 $default")
    assert "a.yaml:3 $default" in str(e.value) and "b.yaml:9 $default" in str(e.value)
    assert r.match("GET", "/z") == (M, 1, {})


# ---------------------------------------------------------------- add / routes / freeze

def test_routes_in_insertion_order_with_values(rt):
    r = rt.Router()
    obj = object()
    r.add("POST", "/b", obj)
    r.add("GET", "/a/{id}", 2, label="x")
    r.add("ANY", "/c/{p+}", None)
    r.set_default("d")
    assert r.routes() == [("POST", "/b", obj), ("GET", "/a/{id}", 2), ("ANY", "/c/{p+}", None)]
    assert r.match("POST", "/b")[1] is obj


def test_freeze(rt):
    r = rt.Router()
    r.add("GET", "/a", 1)
    assert r.match("GET", "/a") == (M, 1, {})      # matching before freeze works too
    r.freeze()
    with pytest.raises(RuntimeError):
        r.add("GET", "/b", 2)
    with pytest.raises(RuntimeError):
        r.set_default(3)
    assert r.match("GET", "/a") == (M, 1, {})
    assert r.match("GET", "/b") == (NF, None, None)
    r.freeze()  # idempotent


def test_match_rejects_non_str(rt):
    r = build(rt, ["GET /a"])
    with pytest.raises(TypeError):
        r.match("GET", None)
    with pytest.raises(TypeError):
        r.match(None, "/a")
    with pytest.raises(TypeError):
        r.match("GET", b"/a")


def test_match_accepts_str_subclasses(rt):
    class S(str):
        pass
    r = build(rt, ["GET /a/{x}"])
    assert r.match(S("GET"), S("/a/b")) == (M, "GET /a/{x}", {"x": "b"})


@pytest.mark.parametrize("first,second", [
    ("GET /pets/{id}", "GET /pets/{petId}"),
    ("GET /pets/{id}", "GET /pets/{id}"),
    ("GET /pets", "GET /pets/"),
    ("ANY /pets", "ANY /pets/"),
    ("ANY /f/{proxy+}", "ANY /f/{rest+}"),
    ("GET /", "GET /"),
    ("POST /a/{x}/b/{y}", "POST /a/{p}/b/{q}"),
])
def test_conflicts(rt, first, second):
    r = rt.Router()
    m1, p1 = first.split(" ", 1)
    m2, p2 = second.split(" ", 1)
    r.add(m1, p1, 1, label=f"a.yaml:1 {first}")
    with pytest.raises(RouteConflictError) as e:
        r.add(m2, p2, 2, label=f"b.yaml:2 {second}")
    msg = str(e.value)
    assert f"a.yaml:1 {first}" in msg and f"b.yaml:2 {second}" in msg
    # the failed add changed nothing
    assert r.routes() == [(m1, p1, 1)]


def test_conflict_default_labels(rt):
    r = rt.Router()
    r.add("GET", "/pets/{id}", 1)
    with pytest.raises(RouteConflictError, match=r"GET /pets/\{petId\}.*GET /pets/\{id\}"):
        r.add("GET", "/pets/{petId}", 2)


@pytest.mark.parametrize("routes", [
    ["GET /pets/{id}", "DELETE /pets/{petId}"],          # names per route, methods differ
    ["GET /a/{x}/b", "GET /a/{y}/c"],                    # same node, different shapes
    ["GET /pets/{id}", "ANY /pets/{petId}"],             # exact vs ANY
    ["GET /f/{p}", "GET /f/{p+}"],                       # param vs greedy
    ["GET /f/x", "GET /f/{p}"],
    ["GET /a", "GET /a/{b}", "GET /a/{b}/{c+}"],
])
def test_not_conflicts(rt, routes):
    r = build(rt, routes)
    assert [f"{m} {p}" for m, p, _ in r.routes()] == routes


def test_param_names_belong_to_each_route(rt):
    r = build(rt, ["GET /pets/{id}", "DELETE /pets/{petId}", "ANY /pets/{any}",
                   "GET /a/{x}/b", "GET /a/{y}/c"])
    assert r.match("GET", "/pets/1")[2] == {"id": "1"}
    assert r.match("DELETE", "/pets/1")[2] == {"petId": "1"}
    assert r.match("PUT", "/pets/1")[2] == {"any": "1"}
    assert r.match("GET", "/a/1/b")[2] == {"x": "1"}
    assert r.match("GET", "/a/1/c")[2] == {"y": "1"}


@pytest.mark.parametrize("method,path", [
    ("GET", ""),
    ("GET", "pets"),
    ("GET", "/a//b"),
    ("GET", "//"),
    ("GET", "/pets/{"),
    ("GET", "/pets/}"),
    ("GET", "/pets/{id"),
    ("GET", "/pets/id}"),
    ("GET", "/pets/{}"),
    ("GET", "/pets/{+}"),
    ("GET", "/pets/{a b}"),
    ("GET", "/pets/{a/b}"),
    ("GET", "/pets/{a}{b}"),
    ("GET", "/pets/x{id}"),
    ("GET", "/pets/{id}.json"),
    ("GET", "/pets/{{id}}"),
    ("GET", "/f/{proxy+}/x"),
    ("GET", "/{a}/{a}"),
    ("GET", "/{a}/{a+}"),
    ("GET", "/a/./b"),
    ("GET", "/a/.."),
    ("GET", "/a%20b"),
    ("GET", "/a?x=1"),
    ("GET", "/a#frag"),
    ("GET", "/a\\b"),
    ("GET", "/a\x00"),
    ("GET", "/a\nb"),
    ("get", "/a"),
    ("", "/a"),
    ("G T", "/a"),
    (None, "/a"),
    ("GET", None),
    ("GET", b"/a"),
])
def test_syntax_errors(rt, method, path):
    r = rt.Router()
    with pytest.raises(RouteSyntaxError):
        r.add(method, path, 1)
    assert r.routes() == []


def test_allowed_template_characters(rt):
    r = build(rt, ["GET /{a.b-c_D9}", "GET /v1.2/caf\u00e9/~user/a:b/@x/{n.x+}", "PURGE /c",
                   "M-SEARCH /d"])
    assert r.match("GET", "/q") == (M, "GET /{a.b-c_D9}", {"a.b-c_D9": "q"})
    assert r.match("GET", "/v1.2/caf%C3%A9/~user/a:b/@x/1/2") == (
        M, "GET /v1.2/caf\u00e9/~user/a:b/@x/{n.x+}", {"n.x": "1/2"})
    assert r.match("PURGE", "/c") == (M, "PURGE /c", {})
    assert r.match("M-SEARCH", "/d") == (M, "M-SEARCH /d", {})


def test_large_table_and_long_paths(rt):
    r = rt.Router()
    for i in range(2000):
        r.add("GET", f"/s{i}/items/{{id}}", i)
        r.add("ANY", f"/s{i}/files/{{p+}}", -i)
    r.freeze()
    assert r.match("GET", "/s1999/items/5") == (M, 1999, {"id": "5"})
    assert r.match("GET", "/s7/files/" + "/".join(["x"] * 5000)) == (
        M, -7, {"p": "/".join(["x"] * 5000)})
    assert r.match("GET", "/" + "a/" * 10000) == (NF, None, None)
    assert r.match("GET", "/s2000/items/5") == (NF, None, None)


# ---------------------------------------------------------------- fast paths vs the walk
#
# Routes whose template is all static are also found by one lookup of the raw path, and
# the compiled twin indexes static children in its own tables (scanned up to 8, hashed
# above), built lazily after add(). These tests fail if a fast path and the general walk
# disagree. A path with a percent-encoded character never takes the whole-path lookup
# (templates hold no "%"), so it is the general path's answer for the same decoded path.

def _encode_one(path):
    """path with its first letter percent-encoded: same decoded path, general path only."""
    for i, ch in enumerate(path):
        if ch.isascii() and ch.isalnum():
            return f"{path[:i]}%{ord(ch):02X}{path[i + 1:]}"
    return None


SHARED_PREFIX = [
    "GET /a/b",
    "POST /a/{x}",
    "ANY /a/{x}/c",
    "GET /a/b/c",
    "PUT /s",
    "GET /s/{x}",
    "GET /",
    "HEAD /h",
    "ANY /h/{rest+}",
    "GET /café/x y",
]


@pytest.mark.parametrize("method,path,status,spec,params", [
    ("GET", "/a/b", M, "GET /a/b", {}),
    ("GET", "/a/b/", M, "GET /a/b", {}),
    ("GET", "/a/%62", M, "GET /a/b", {}),
    ("POST", "/a/b", M, "POST /a/{x}", {"x": "b"}),        # static node lacks POST: backtrack
    ("POST", "/a/b/", M, "POST /a/{x}", {"x": "b"}),
    ("POST", "/a/%62", M, "POST /a/{x}", {"x": "b"}),
    ("PUT", "/a/b", NA, None, None),                       # path known, method not
    ("GET", "/a/b//", NF, None, None),
    ("GET", "/a//b", NF, None, None),
    ("GET", "/a/b/c", M, "GET /a/b/c", {}),
    ("POST", "/a/b/c", M, "ANY /a/{x}/c", {"x": "b"}),
    ("GET", "/a/z/c", M, "ANY /a/{x}/c", {"x": "z"}),
    ("PUT", "/s", M, "PUT /s", {}),
    ("GET", "/s", NA, None, None),
    ("GET", "/s/", NA, None, None),
    ("GET", "/s/t", M, "GET /s/{x}", {"x": "t"}),
    ("GET", "/", M, "GET /", {}),
    ("POST", "/", NA, None, None),
    ("GET", "//", NF, None, None),
    ("HEAD", "/h", M, "HEAD /h", {}),
    ("GET", "/h", NA, None, None),                         # greedy needs >= 1 segment
    ("GET", "/h/", NA, None, None),
    ("GET", "/h/h", M, "ANY /h/{rest+}", {"rest": "h"}),
    ("GET", "/café/x y", M, "GET /café/x y", {}),
    ("GET", "/café/x y/", M, "GET /café/x y", {}),
    ("GET", "/caf%C3%A9/x%20y", M, "GET /café/x y", {}),
    ("GET", "/CAFÉ/x y", NF, None, None),
    ("GET", "/a/b\\", BAD, None, None),
    ("GET", "/a/b/.", BAD, None, None),
    ("GET", "/a/b/%2e", BAD, None, None),
])
def test_static_fast_path_agrees_with_the_walk(rt, method, path, status, spec, params):
    r = build(rt, SHARED_PREFIX)
    assert r.match(method, path) == (status, spec, params)
    enc = _encode_one(path)
    if enc is not None and status != BAD:
        assert r.match(method, enc) == (status, spec, params), enc


def test_static_fast_path_with_default_and_str_subclass(rt):
    class S(str):
        pass
    r = build(rt, SHARED_PREFIX, default="DEFAULT")
    assert r.match("PUT", "/a/b") == (M, "DEFAULT", {})
    assert r.match("GET", S("/a/b")) == (M, "GET /a/b", {})
    assert r.match("POST", S("/a/b/")) == (M, "POST /a/{x}", {"x": "b"})
    assert r.match(S("GET"), "/a/b") == (M, "GET /a/b", {})


def test_matching_between_adds_sees_every_route(rt):
    # the compiled twin indexes a node's static children lazily; crossing from a scanned
    # table (<= 8 children) to a hashed one happens between matches here
    r = rt.Router()
    for i in range(40):
        r.add("GET", f"/k{i}", i)
        r.add("GET", f"/k{i}/{{id}}", -i)
        for j in range(i + 1):
            assert r.match("GET", f"/k{j}") == (M, j, {}), (i, j)
            assert r.match("GET", f"/%6B{j}") == (M, j, {}), (i, j)
            assert r.match("GET", f"/k{j}/z") == (M, -j, {"id": "z"}), (i, j)
        assert r.match("GET", f"/k{i + 1}") == (NF, None, None)
        assert r.match("GET", f"/k{i}0x") == (NF, None, None)
    r.freeze()
    assert r.match("GET", "/k39/q") == (M, -39, {"id": "q"})


def test_many_static_children_with_similar_names(rt):
    names = [f"n{i}" for i in range(500)] + ["", "x" * 7, "x" * 8, "x" * 9, "x" * 17, "é" * 5]
    names = [n for n in names if n]
    r = rt.Router()
    for n in names:
        r.add("GET", f"/t/{n}/end", n)
    r.add("GET", "/t/{other}/end", "param")
    r.freeze()
    for n in names:
        assert r.match("GET", f"/t/{n}/end") == (M, n, {})
    for miss in ("n500", "n", "x" * 10, "x" * 16, "é" * 4, "N1", "n01"):
        assert r.match("GET", f"/t/{miss}/end") == (M, "param", {"other": miss})


def test_long_and_percent_encoded_paths(rt):
    # more segments / bytes than the compiled twin keeps on the C stack
    r = build(rt, ["ANY /g/{rest+}", "GET /p/{a}/{b}"])
    segs = [f"s%20{i}" for i in range(100)]
    assert r.match("GET", "/g/" + "/".join(segs) + "/") == (
        M, "ANY /g/{rest+}", {"rest": "/".join(f"s {i}" for i in range(100))})
    long = "%C3%A9" * 200
    assert r.match("GET", f"/p/{long}/x") == (M, "GET /p/{a}/{b}", {"a": "é" * 200, "b": "x"})
    assert r.match("GET", "/g/" + "/".join(segs) + "/%2e%2e") == (BAD, None, None)
    assert r.match("GET", "/g/" + "a/" * 40 + "%ZZ") == (BAD, None, None)
    assert r.match("GET", "/g/" + "a/" * 40 + "/b") == (NF, None, None)


def _expect_decoded(raw: bytes):
    """What a single percent-encoded segment should give: its str, or None for BAD_PATH."""
    try:
        dec = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if dec in (".", "..") or any(ch in "/\\" or ord(ch) < 0x20 or ord(ch) == 0x7F
                                 for ch in dec):
        return None
    return dec


@settings(max_examples=300, deadline=None)
@given(raw=st.one_of(
    st.binary(min_size=1, max_size=8),
    st.text(min_size=1, max_size=4).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.lists(st.sampled_from([b"\xc2", b"\xdf", b"\xe0", b"\xed", b"\xef", b"\xf0", b"\xf4",
                              b"\xf5", b"\x80", b"\x8f", b"\x90", b"\x9f", b"\xa0", b"\xbf",
                              b"\xc0", b"a"]), min_size=1, max_size=5).map(b"".join),
))
def test_percent_decoding_follows_pythons_strict_utf8(raw):
    expected = _expect_decoded(raw)
    path = "/p/" + "".join(f"%{b:02X}" for b in raw)
    for name, mod in TWINS:
        r = build(mod, ["GET /p/{v}"])
        got = r.match("GET", path)
        if expected is None:
            assert got == (BAD, None, None), (name, raw)
        else:
            assert got == (M, "GET /p/{v}", {"v": expected}), (name, raw)


# ---------------------------------------------------------------- twins agree (property)

METHODS = ["GET", "POST", "HEAD", "ANY"]
TEMPLATE_STATIC = ["a", "b", "c", "café", "x y", "a.b"]
GOOD_SEGMENTS = [
    "a", "b", "c", "d", "café", "caf%C3%A9", "caf%c3%a9", "x y", "x%20y", "%61", "a.b", "a%2Eb",
    "...", "é", "%25", "+", "%F0%9F%90%8D", "7",
]
BAD_OR_EMPTY_SEGMENTS = [
    "", ".", "..", "%2e", "%2E%2e", "%2F", "a%2fb", "%5c", "\\", "%00", "\x01", "%7f",
    "%", "%4", "%zz", "%C3", "%FF", "%C0%AE", "%ED%A0%80", "\ud800",
]
# mostly valid segments, so that most requests reach the trie
PATH_SEGMENTS = GOOD_SEGMENTS * 8 + BAD_OR_EMPTY_SEGMENTS


@st.composite
def route_tables(draw):
    n = draw(st.integers(0, 12))
    routes = []
    for _ in range(n):
        method = draw(st.sampled_from(METHODS))
        nseg = draw(st.integers(0, 4))
        segs = []
        for i in range(nseg):
            kind = draw(st.sampled_from(["s", "s", "p", "g"]))
            name = draw(st.sampled_from(["id", "x", "y", "proxy"]))
            if kind == "s":
                segs.append(draw(st.sampled_from(TEMPLATE_STATIC)))
            elif kind == "p":
                segs.append("{" + name + "}")
            else:
                segs.append("{" + name + "+}")   # may be misplaced -> RouteSyntaxError
        path = "/" + "/".join(segs)
        if segs and draw(st.booleans()):
            path += "/"
        routes.append((method, path))
    default = draw(st.sampled_from([None, None, "DEFAULT"]))
    return routes, default


@st.composite
def request_paths(draw):
    segs = draw(st.lists(st.sampled_from(PATH_SEGMENTS), min_size=0, max_size=6))
    prefix = draw(st.sampled_from(["/"] * 8 + ["", "//"]))
    suffix = draw(st.sampled_from(["", "", "/", "//"]))
    return prefix + "/".join(segs) + suffix


def path_for(draw, template):
    """A request path that the template matches (before priorities): fill in params."""
    out = []
    for t in ([] if template == "/" else template[1:].rstrip("/").split("/")):
        if t.endswith("+}"):
            out.extend(draw(st.lists(st.sampled_from(PATH_SEGMENTS), min_size=1, max_size=3)))
        elif t.startswith("{"):
            out.append(draw(st.sampled_from(PATH_SEGMENTS)))
        else:
            out.append(draw(st.sampled_from([t, t, t.replace(" ", "%20").replace("é", "%C3%A9")])))
    return "/" + "/".join(out) + draw(st.sampled_from(["", "", "/"]))


def _apply(mod, routes, default):
    r = mod.Router()
    outcomes = []
    for i, (method, path) in enumerate(routes):
        try:
            r.add(method, path, i)
            outcomes.append(None)
        except (RouteSyntaxError, RouteConflictError) as e:
            outcomes.append((type(e), str(e)))
    if default is not None:
        r.set_default(default)
    r.freeze()
    return r, outcomes


# An independent oracle: try every route, keep the most specific (segment-wise
# static < param < greedy, then exact method before ANY).
_PCT_OK = re.compile(r"%[0-9A-Fa-f]{2}")


def _oracle_segments(path):
    if not path.startswith("/"):
        return None
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F or ch == "\\" or 0xD800 <= ord(ch) <= 0xDFFF
           for ch in path):
        return None
    if path == "/":
        return []
    body = path[1:]
    if body.endswith("/"):
        body = body[:-1]
    out = []
    for seg in body.split("/"):
        if "%" in _PCT_OK.sub("", seg):
            return None
        try:
            dec = unquote(seg, errors="strict")
        except UnicodeDecodeError:
            return None
        if dec in (".", "..") or any(ch in "/\\" or ord(ch) < 0x20 or ord(ch) == 0x7F
                                     for ch in dec):
            return None
        out.append(dec)
    return out


def _oracle(routes, accepted, default, method, path):
    segs = _oracle_segments(path)
    if segs is None:
        return (BAD, None, None)
    best = None
    path_seen = False
    if "" not in segs:
        for idx, (rmethod, template) in enumerate(routes):
            if not accepted[idx]:
                continue
            tsegs = [] if template == "/" else template[1:].rstrip("/").split("/")
            if template.endswith("//"):
                continue
            kinds, params, ok = [], {}, True
            for i, t in enumerate(tsegs):
                if t.endswith("+}"):
                    if i >= len(segs):
                        ok = False
                        break
                    kinds.append(2)
                    params[t[1:-2]] = "/".join(segs[i:])
                    break
                if i >= len(segs):
                    ok = False
                    break
                if t.startswith("{"):
                    kinds.append(1)
                    params[t[1:-1]] = segs[i]
                elif t == segs[i]:
                    kinds.append(0)
                else:
                    ok = False
                    break
            else:
                ok = ok and len(tsegs) == len(segs)
            if not ok:
                continue
            path_seen = True
            if rmethod == method or rmethod == "ANY":
                key = (kinds, 0 if rmethod == method else 1)
                if best is None or key < best[0]:
                    best = (key, idx, params)
    if best is not None:
        return (M, best[1], best[2])
    if default is not None:
        return (M, default, {})
    return (NA if path_seen else NF, None, None)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=route_tables(),
       requests=st.lists(st.tuples(st.sampled_from(METHODS + ["PUT"]), request_paths()),
                         min_size=1, max_size=6),
       data=st.data())
def test_twins_agree_with_each_other_and_the_oracle(table, requests, data):
    if "cython" not in IMPLS and os.environ.get("CI") == "true":
        pytest.fail("gwcore.router is not compiled; the twin comparison cannot run under CI")
    routes, default = table
    for _, template in routes:
        requests.append((data.draw(st.sampled_from(METHODS + ["PUT"])),
                         path_for(data.draw, template)))
    built = [(name, *_apply(mod, routes, default)) for name, mod in TWINS]
    _, ref_router, ref_outcomes = built[-1]   # the pure twin
    for name, r, outcomes in built:
        assert outcomes == ref_outcomes, name
        assert r.routes() == ref_router.routes(), name
    accepted = [o is None for o in ref_outcomes]
    for method, path in requests:
        expected = _oracle(routes, accepted, default, method, path)
        for name, r, _ in built:
            assert r.match(method, path) == expected, (name, method, path, routes, default)


def test_twin_comparison_runs_on_both():
    if "cython" not in IMPLS:
        if os.environ.get("CI") == "true":
            pytest.fail("gwcore.router is not compiled (CI=true)")
        pytest.skip("compiled gwcore.router not built; only the pure twin is tested")
    assert [name for name, _ in TWINS] == ["cython", "python"]


def test_load_picks_the_expected_twin():
    mod = gwcore.load("router")
    if gwcore.PURE or "cython" not in IMPLS:
        assert mod is IMPLS["python"]
    else:
        assert mod is IMPLS["cython"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=route_tables())
def test_whole_path_lookup_agrees_with_the_walk(table):
    # every all-static route, with and without a trailing "/", for every method: the same
    # answer whether the raw path (whole-path lookup) or an encoded twin of it (walk) is
    # matched, on both twins
    routes, default = table
    for name, mod in TWINS:
        r, outcomes = _apply(mod, routes, default)
        for (_, template), outcome in zip(routes, outcomes):
            if outcome is not None or "{" in template:
                continue
            for path in {template, template.rstrip("/") + "/"}:
                enc = _encode_one(path)
                if enc is None:
                    continue
                for method in METHODS + ["PUT"]:
                    assert r.match(method, path) == r.match(method, enc), (
                        name, method, path, enc, routes, default)
