"""Micro benchmark: gwcore cache-key computation, compiled and pure twins.

Opt-in, not part of the test suite (pytest ignores tests/bench). Run on purpose::

    python setup.py build_ext --inplace      # or: cythonize -i gwcore/cachekey.pyx
    python -m pytest tests/bench/bench_cachekey.py -o addopts="" -p no:cacheprovider \
        --benchmark-group-by=group --benchmark-columns=min,median,mean,ops
    python tests/bench/bench_cachekey.py     # plain ns/op table, no pytest

One operation is what the cache stage does per request: ``spec.key(...)`` (canonical
form, strict-mode header/query scan) plus ``digest(...)`` (xxh3-128). Cases: a route with
no declared parameters, and one with path + query + header parameters, on a request with
six typical headers.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gwcore  # noqa: E402
from _timing import bench_ns, best_ns  # noqa: E402

HEADERS = [("host", "api.example.com"), ("user-agent", "wrk"), ("accept", "application/json"),
           ("accept-encoding", "gzip"), ("x-request-id", "abc"), ("connection", "keep-alive")]

CASES = {
    "plain": (dict(), ("GET", "api.example.com", "/prod/pets/1", "", HEADERS, {"id": "1"})),
    "keyed": (dict(path_params=("id",), query=("lang", "page"), headers=("accept",)),
              ("GET", "api.example.com", "/prod/pets/1", "page=2&lang=en", HEADERS, {"id": "1"})),
}


def _op(mod, case):
    kw, args = CASES[case]
    spec = mod.KeySpec("shop\0prod\0GET /pets/{id}", **kw)
    digest = mod.digest

    def op():
        return digest(spec.key(*args))
    return op


def main() -> None:
    print(f"{'twin':8} {'case':6} {'ns/op':>8}")
    for name, mod in gwcore.twins("cachekey"):
        for case in CASES:
            op = _op(mod, case)
            print(f"{name:8} {case:6} {best_ns(op, 200_000):8.0f}")


try:
    import pytest
except ImportError:  # plain script use
    pytest = None

if pytest is not None and __name__ != "__main__":
    pytest.importorskip("pytest_benchmark")

    @pytest.mark.parametrize("case", list(CASES))
    @pytest.mark.parametrize("twin", [n for n, _ in gwcore.twins("cachekey")])
    def test_cachekey(benchmark, twin, case):
        mod = dict(gwcore.twins("cachekey"))[twin]
        benchmark.group = f"cachekey {case}"
        op = _op(mod, case)
        assert len(op()) == 16
        bench_ns(benchmark, op)

if __name__ == "__main__":
    main()
