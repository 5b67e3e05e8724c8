"""gwcore cachekey: the same tests on both twins (compiled and pure), plus a hypothesis
test that the twins produce the same bytes on random input, and an independent decoder
that proves the canonical form unambiguous on random input."""
from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gwcore

TWINS = gwcore.twins("cachekey")
IMPLS = {name: mod for name, mod in TWINS}


@pytest.fixture(params=[name for name, _ in TWINS])
def ck(request):
    return IMPLS[request.param]


def spec(ck, **kw):
    kw.setdefault("path_params", ("id",))
    kw.setdefault("query", ("lang",))
    kw.setdefault("headers", ("accept",))
    return ck.KeySpec("shop\0prod\0GET /pets/{id}", **kw)


def key(s, method="GET", host="h", path="/prod/pets/1", query="", headers=(),
        params=None, identity=None, body=None):
    return s.key(method, host, path, query, list(headers),
                 {"id": "1"} if params is None else params, identity, body)


def test_compiled_twin_is_built():
    if os.environ.get("CI") == "true" or os.environ.get("GWCORE_REQUIRE_EXT") == "1":
        assert "cython" in IMPLS, "gwcore.cachekey is not compiled (python setup.py build_ext --inplace)"


def test_load_picks_an_implementation():
    mod = gwcore.load("cachekey")
    assert hasattr(mod, "KeySpec")
    assert gwcore.IMPLEMENTATIONS["cachekey"] in ("cython", "python")


def test_spec_is_canonicalised(ck):
    s = ck.KeySpec("ns", path_params=("b", "a"), query=("z", "a", "z"), headers=("X-B", "accept"))
    assert s.path_params == ("a", "b")
    assert s.query == ("a", "z")
    assert s.headers == ("accept", "x-b")
    assert s.strict is True
    assert "x-forwarded-host" not in s.allowed
    assert "user-agent" in s.allowed


def test_same_request_same_key_and_digest_is_16_bytes(ck):
    s = spec(ck)
    a = key(s, query="lang=en")
    b = key(s, query="lang=en")
    assert isinstance(a, bytes) and a == b
    d = ck.digest(a)
    assert isinstance(d, bytes) and len(d) == 16 and d == ck.digest(b)


def test_query_order_does_not_matter(ck):
    s = spec(ck, query=("a", "b"))
    assert key(s, query="a=1&b=2") == key(s, query="b=2&a=1")


def test_repeated_parameters_matter(ck):
    s = spec(ck, query=("a", "b"))
    k1 = key(s, query="a=1")
    assert key(s, query="a=1&a=1") != k1
    assert key(s, query="a=1&a=2") != key(s, query="a=2&a=1")
    assert key(s, query="a=1&a=2") != key(s, query="a=1")


def test_query_missing_empty_and_flag_differ(ck):
    s = spec(ck)
    keys = {key(s, query=q) for q in ("", "lang", "lang=", "lang=en")}
    assert len(keys) == 4
    assert key(s, query="") == key(s, query="&&")


def test_declared_parameters_change_the_key(ck):
    s = spec(ck)
    assert key(s, query="lang=en") != key(s, query="lang=fr")
    assert key(s, headers=[("accept", "a/b")]) != key(s, headers=[("accept", "c/d")])
    assert key(s, headers=[("accept", "a")]) != key(s)
    assert key(s, params={"id": "1"}) != key(s, params={"id": "2"})
    assert key(s, params={}) != key(s, params={"id": ""})


def test_everything_that_reaches_the_upstream_is_in_the_key(ck):
    s = spec(ck)
    base = key(s)
    assert key(s, method="POST") != base
    assert key(s, path="/prod/pets/2") != base
    assert key(s, path="/prod/pets/%31") != base          # raw path, not decoded
    assert key(s, host="other") != base
    assert key(s, host="H") == base                          # host is case-insensitive
    assert key(s, identity="k1") != base
    assert key(s, identity="k1") != key(s, identity="k2")
    assert key(s, body=b"") != base
    assert key(s, body=b"a") != key(s, body=b"b")
    other = ck.KeySpec("shop\0prod\0GET /cats/{id}", path_params=("id",), query=("lang",),
                       headers=("accept",))
    assert key(other) != base


def test_excluded_parameters_are_ignored_when_not_strict(ck):
    s = spec(ck, strict=False)
    base = key(s, query="lang=en")
    assert key(s, query="lang=en&utm=1") == base
    assert key(s, query="utm=1&lang=en", headers=[("x-forwarded-host", "evil")]) == base
    assert key(s, headers=[("accept-language", "de")], query="lang=en") == base


def test_strict_mode_bypasses_unkeyed_input(ck):
    s = spec(ck)
    assert key(s, query="lang=en&utm=1") is None
    assert key(s, query="lang=en;utm=1") is not None       # ';' is part of the raw value
    assert key(s, query="lang=en;utm=1") != key(s, query="lang=en")
    assert key(s, headers=[("x-forwarded-host", "evil.example")]) is None
    assert key(s, headers=[("cookie", "a=b")]) is None
    assert key(s, headers=[("x-original-url", "/admin")]) is None
    assert key(s, headers=[("user-agent", "curl"), ("accept-encoding", "gzip")]) == key(s)
    allowed = ck.KeySpec("ns", strict=True, allowed_headers=("X-Custom",))
    assert allowed.key("GET", "h", "/", "", [("x-custom", "1")], None) is not None
    assert allowed.key("GET", "h", "/", "", [("user-agent", "1")], None) is None


def test_encoded_query_names_are_matched_decoded(ck):
    s = spec(ck)
    # l%61ng is "lang" to the upstream: it must be keyed, not ignored
    assert key(s, query="l%61ng=fr") is not None
    assert key(s, query="lang=en&l%61ng=fr") != key(s, query="lang=en")
    assert key(s, query="lang=en&l%61ng=fr") == key(s, query="lang=en&lang=fr")
    assert key(s, query="lang+x=1") is None                  # "lang x": undeclared
    loose = spec(ck, strict=False)
    assert key(loose, query="lang=en&l%61ng=fr") != key(loose, query="lang=en")


def test_values_are_raw(ck):
    s = spec(ck)
    assert key(s, query="lang=%65n") != key(s, query="lang=en")
    assert key(s, query="lang=a%26lang%3Db") != key(s, query="lang=a&lang=b")


def test_length_prefix_prevents_ambiguity(ck):
    s = ck.KeySpec("ns", query=("a", "b"))
    k1 = s.key("GET", "h", "/", "a=1:1&b=2", [], None)
    k2 = s.key("GET", "h", "/", "a=1&b=1:2", [], None)
    assert k1 != k2
    s2 = ck.KeySpec("ns", headers=("a", "b"))
    assert s2.key("GET", "h", "/", "", [("a", "x~"), ("b", "")], None) != \
        s2.key("GET", "h", "/", "", [("a", "x"), ("b", "~")], None)


def test_repeated_headers_all_values(ck):
    s = spec(ck)
    one = key(s, headers=[("accept", "a")])
    assert key(s, headers=[("accept", "a"), ("accept", "b")]) != one
    assert key(s, headers=[("accept", "a"), ("user-agent", "x"), ("accept", "b")]) == \
        key(s, headers=[("accept", "a"), ("accept", "b")])


def test_unicode_and_surrogates(ck):
    s = spec(ck)
    a = key(s, path="/prod/caf\u00e9", query="lang=\u00e9")
    b = key(s, path="/prod/caf\udce9", query="lang=\u00e9")
    assert a != b


def test_with_vary(ck):
    s = spec(ck)
    base = key(s)
    h1 = [("accept-language", "de"), ("x", "1")]
    h2 = [("accept-language", "fr")]
    v1 = ck.with_vary(base, ("accept-language",), h1)
    assert v1.startswith(base)
    assert v1 != ck.with_vary(base, ("accept-language",), h2)
    assert v1 == ck.with_vary(base, ("accept-language",), [("accept-language", "de")])
    assert ck.with_vary(base, ("accept-language",), []) != \
        ck.with_vary(base, ("accept-language",), [("accept-language", "")])
    assert ck.with_vary(base, (), h1) != base


def test_canonical_identity(ck):
    ci = ck.canonical_identity
    assert ci(None, None) is None
    assert ci("k", None) != ci(None, "k")
    assert ci("k", "p") != ci("k", "q")
    assert ci(None, {"sub": "1", "b": 2}) == ci(None, {"b": 2, "sub": "1"})
    assert ci(None, {"sub": "1"}) != ci(None, {"sub": "2"})


# ------------------------------------------------------------- twins agree (property)

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8) | \
    st.sampled_from(["a", "b", "lang", "l%61ng", "x+y", "%zz", "", "~", "1:", "0#"])
_names = st.lists(st.sampled_from(["a", "b", "lang", "x y", "id"]), max_size=3)
_hnames = st.sampled_from(["accept", "x-a", "user-agent", "x-forwarded-host", "cookie"])


@st.composite
def _query(draw):
    segs = draw(st.lists(st.tuples(st.sampled_from(["a", "b", "lang", "l%61ng", "x+y", "", "zz"]),
                                   st.one_of(st.none(), _text)), max_size=5))
    return "&".join(n if v is None else f"{n}={v}" for n, v in segs)


@settings(max_examples=300, deadline=None)
@given(pp=_names, q=_names, h=st.lists(_hnames, max_size=2), strict=st.booleans(),
       method=st.sampled_from(["GET", "HEAD", "POST"]), host=st.one_of(st.none(), _text),
       path=_text, query=_query(),
       headers=st.lists(st.tuples(_hnames, _text), max_size=4),
       params=st.dictionaries(st.sampled_from(["a", "id", "x y"]), _text, max_size=2),
       identity=st.one_of(st.none(), _text), body=st.one_of(st.none(), st.binary(max_size=8)),
       vary=st.lists(_hnames, max_size=2))
def test_twins_agree(pp, q, h, strict, method, host, path, query, headers, params, identity,
                     body, vary):
    outs = []
    for _, mod in TWINS:
        s = mod.KeySpec("n\0s\0r", path_params=pp, query=q, headers=h, strict=strict)
        k = s.key(method, host, path, query, headers, params, identity, body)
        v = mod.with_vary(k, tuple(vary), headers) if k is not None else None
        outs.append((k, v, mod.digest(k) if k is not None else None))
    assert all(o == outs[0] for o in outs)


def _decode(canon: bytes) -> list:
    """Independent parser of the canonical form: returns the sequence of tokens."""
    s = canon.decode("utf-8", "surrogatepass")
    assert s.startswith("gwc1")
    i, out = 4, []
    while i < len(s):
        if s[i] == "~":
            out.append(None)
            i += 1
            continue
        j = i
        while s[j].isdigit():
            j += 1
        n = int(s[i:j])
        if s[j] == "#":
            out.append(("#", n))
            i = j + 1
        else:
            assert s[j] == ":"
            out.append(s[j + 1:j + 1 + n])
            i = j + 1 + n
    return out


@settings(max_examples=200, deadline=None)
@given(q1=_query(), q2=_query(), h1=st.lists(st.tuples(_hnames, _text), max_size=3),
       h2=st.lists(st.tuples(_hnames, _text), max_size=3), p1=_text, p2=_text)
def test_equal_keys_only_for_equal_inputs(q1, q2, h1, h2, p1, p2):
    """Two requests get the same key only if the decoded token sequences are equal, and
    the token sequence decides every keyed input (no two inputs share an encoding)."""
    _, mod = TWINS[0]
    s = mod.KeySpec("ns", path_params=("id",), query=("a", "lang"), headers=("accept", "x-a"),
                    strict=False)
    k1 = s.key("GET", "h", "/p", q1, h1, {"id": p1})
    k2 = s.key("GET", "h", "/p", q2, h2, {"id": p2})
    t1, t2 = _decode(k1), _decode(k2)
    assert (k1 == k2) == (t1 == t2)
    if k1 == k2:
        assert p1 == p2
        assert ([v for n, v in h1 if n == "accept"] == [v for n, v in h2 if n == "accept"])
        assert ([v for n, v in h1 if n == "x-a"] == [v for n, v in h2 if n == "x-a"])
