"""Micro benchmark: gwcore router (compiled and pure twins) vs werkzeug's router.

Opt-in, not part of the test suite (pytest.ini ignores tests/bench). Run on purpose::

    python setup.py build_ext --inplace
    python -m pytest tests/bench/bench_router.py -o addopts="" -p no:cacheprovider \
        --benchmark-group-by=group --benchmark-columns=min,median,mean,ops

Each benchmark round matches the same REQUESTS batch (hits on static, {param}, two
params, greedy, percent-encoded and a miss) against tables of 10 / 1,000 / 10,000 routes;
``extra_info["ns_per_match"]`` is the median time per single match. Groups are per table
size, so pytest-benchmark's relative column is the ratio between implementations.
"""
from __future__ import annotations

import pytest

import gwcore

pytest.importorskip("pytest_benchmark")
werkzeug_routing = pytest.importorskip("werkzeug.routing")
werkzeug_exceptions = pytest.importorskip("werkzeug.exceptions")

SIZES = (10, 1_000, 10_000)

# one "service" contributes these five routes; tables are the first N of svc0, svc1, ...
GROUP = (
    ("GET", "/svc{i}/items"),
    ("POST", "/svc{i}/items"),
    ("GET", "/svc{i}/items/{{id}}"),
    ("POST", "/svc{i}/items/{{id}}/tags/{{tag}}"),
    ("ANY", "/svc{i}/files/{{proxy+}}"),
)


def table(n: int) -> list[tuple[str, str]]:
    out = []
    i = 0
    while len(out) < n:
        for method, tpl in GROUP:
            if len(out) == n:
                break
            out.append((method, tpl.format(i=i)))
        i += 1
    return out


def requests_for(n: int) -> list[tuple[str, str]]:
    last = (n - 1) // len(GROUP)  # the last full-or-partial service in the table
    s = f"/svc{last}"
    mid = f"/svc{last // 2}"
    return [
        ("GET", f"{s}/items"),
        ("GET", f"{mid}/items/42"),
        ("GET", f"{mid}/items/caf%C3%A9"),
        ("GET", f"{s}/items/42/"),
        ("POST", f"{mid}/items/42/tags/blue") if n >= 4 else ("GET", f"{mid}/items/7"),
        ("GET", f"{mid}/files/a/b/c.txt") if n >= 5 else ("GET", f"{mid}/items/8"),
        ("GET", f"{mid}/items"),
        ("GET", "/nowhere/at/all"),
    ]


def werkzeug_path(tpl: str) -> str:
    parts = []
    for seg in tpl.split("/"):
        if seg.startswith("{") and seg.endswith("+}"):
            parts.append(f"<path:{seg[1:-2]}>")
        elif seg.startswith("{"):
            parts.append(f"<{seg[1:-1]}>")
        else:
            parts.append(seg)
    return "/".join(parts)


class WerkzeugRouter:
    """werkzeug.routing.Map with the same routes; match() returns the same triples."""

    def __init__(self, routes: list[tuple[str, str]]) -> None:
        rules = [
            werkzeug_routing.Rule(werkzeug_path(path), endpoint=(method, path),
                                  methods=None if method == "ANY" else [method],
                                  strict_slashes=False)
            for method, path in routes
        ]
        self.adapter = werkzeug_routing.Map(rules).bind("localhost")
        self.NotFound = werkzeug_exceptions.NotFound
        self.MethodNotAllowed = werkzeug_exceptions.MethodNotAllowed

    def match(self, method: str, path: str):
        try:
            endpoint, args = self.adapter.match(path, method)
        except self.NotFound:
            return (1, None, None)
        except self.MethodNotAllowed:
            return (2, None, None)
        return (0, f"{endpoint[0]} {endpoint[1]}", args)


_CACHE: dict[tuple[str, int], object] = {}


def router(impl: str, n: int):
    key = (impl, n)
    if key not in _CACHE:
        routes = table(n)
        if impl == "werkzeug":
            _CACHE[key] = WerkzeugRouter(routes)
        else:
            mod = dict(gwcore.twins("router"))[impl]
            r = mod.Router()
            for method, path in routes:
                r.add(method, path, f"{method} {path}")
            r.freeze()
            _CACHE[key] = r
    return _CACHE[key]


IMPLS = [name for name, _ in gwcore.twins("router")] + ["werkzeug"]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("impl", IMPLS)
def test_match(benchmark, impl, n):
    r = router(impl, n)
    reqs = requests_for(n)
    # sanity: every implementation agrees on status and route (werkzeug decodes '%' itself,
    # so params are compared only between the gwcore twins)
    ref = router("python", n)
    for method, path in reqs:
        got, want = r.match(method, path), ref.match(method, path)
        assert got[:2] == want[:2], (impl, method, path, got, want)
    match = r.match

    def batch():
        for method, path in reqs:
            match(method, path)

    benchmark.group = f"{n:>6} routes"
    benchmark.extra_info["matches_per_round"] = len(reqs)
    benchmark(batch)
    benchmark.extra_info["ns_per_match"] = round(benchmark.stats.stats.median / len(reqs) * 1e9)
    print(f"\n{impl:>8} {n:>6} routes: {benchmark.extra_info['ns_per_match']} ns/match")
