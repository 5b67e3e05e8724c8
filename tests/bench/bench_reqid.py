"""Micro benchmark: gwcore request ids, compiled and pure twins (ns/op).

Opt-in, not part of the test suite (pytest ignores tests/bench). Run on purpose::

    python setup.py build_ext --inplace      # or: cythonize -i gwcore/reqid.pyx
    python tests/bench/bench_reqid.py        # plain ns/op table, no pytest
    python tests/bench/bench_reqid.py 2000   # the same, 2,000 calls per timing (a quick look)
    python -m pytest tests/bench/bench_reqid.py -o addopts="" -p no:cacheprovider \
        --benchmark-group-by=group --benchmark-columns=min,median,mean,ops

One operation is what every request costs for its id: ``new_request_id()``, a random
version-4 UUID string. The plain table also prints ``str(uuid.uuid4())``, what the twins
replace, for scale.

The ids are random, so the twins cannot be compared value for value: before timing, each
twin's ids are checked to be UUID4 strings formatted as ``str(uuid.UUID(...))`` would, and
not to repeat.
"""
from __future__ import annotations

import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gwcore  # noqa: E402
from _timing import bench_ns, best_ns  # noqa: E402


def check(mod) -> None:
    """``mod.new_request_id`` gives distinct, canonical version-4 UUID strings."""
    ids = [mod.new_request_id() for _ in range(64)]
    assert len(set(ids)) == len(ids), f"{mod.__name__} repeats ids"
    for rid in ids:
        assert type(rid) is str
        u = uuid.UUID(rid)
        assert str(u) == rid and u.version == 4 and u.variant == uuid.RFC_4122, rid


def _uuid4():
    return str(uuid.uuid4())


def main(n: int | None = None) -> None:
    print(f"{'twin':8} {'ns/op':>8}")
    twins = gwcore.twins("reqid")
    for _, mod in twins:
        check(mod)
    rows = [(name, mod.new_request_id) for name, mod in twins]
    for name, op in rows + [("uuid4", _uuid4)]:
        k = n or (500_000 if name == "cython" else 100_000)
        print(f"{name:8} {best_ns(op, k):8.0f}")


try:
    import pytest
except ImportError:  # plain script use
    pytest = None

if pytest is not None and __name__ != "__main__":
    pytest.importorskip("pytest_benchmark")

    @pytest.mark.parametrize("twin", [n for n, _ in gwcore.twins("reqid")])
    def test_reqid(benchmark, twin):
        mod = dict(gwcore.twins("reqid"))[twin]
        benchmark.group = "reqid new_request_id"
        check(mod)
        bench_ns(benchmark, mod.new_request_id)

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else None)
