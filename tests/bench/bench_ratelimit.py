"""Micro benchmark: gwcore token buckets from Python, compiled and pure twins (ns/op).

Opt-in, not part of the test suite (pytest ignores tests/bench). Run on purpose::

    python setup.py build_ext --inplace      # or: cythonize -i gwcore/ratelimit.pyx
    python tests/bench/bench_ratelimit.py    # plain ns/op table, no pytest
    python -m pytest tests/bench/bench_ratelimit.py -o addopts="" -p no:cacheprovider \
        --benchmark-group-by=group --benchmark-columns=min,median,mean,ops

Cases (each one acquire of one token that succeeds; limits out of reach):

- ``bucket``: ``TokenBucket.acquire(now)``, a bucket private to the caller;
- ``table1``: ``Table.take([b], None, now)`` on a private table, one bucket (a route);
- ``table3``: the same with three buckets (route, stage, account);
- ``shared3``: three buckets on a node-wide table mapped from /dev/shm (the cross-process
  lock: a spin lock in the compiled twin, ``lockf`` in the pure one);
- ``plan``: three buckets plus a plan bucket and two counters (quota, usage), at=1:
  what a request with an API key costs.

``now`` comes from ``time.monotonic()`` inside the operation, as in the gateway.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import gwcore  # noqa: E402
from _timing import bench_ns, best_ns  # noqa: E402

BIG = 1e15


def _op(mod, case, tmpdir):
    mono = time.monotonic
    if case == "bucket":
        b = mod.TokenBucket(BIG, BIG, mono())
        acq = b.acquire
        return (lambda: acq(mono())), (lambda: None)
    path = os.path.join(tmpdir, f"seg-{mod.IMPLEMENTATION}-{case}") if case == "shared3" else None
    t = mod.Table(path, 4096)
    bs = [mod.Bucket(f"{case}:{i}", BIG, BIG) for i in range(3)]
    take = t.take
    if case == "table1":
        one = bs[:1]
        return (lambda: take(one, None, mono())), t.close
    if case in ("table3", "shared3"):
        return (lambda: take(bs, None, mono())), t.close
    plan = [mod.Bucket("p:gold:alice", BIG, BIG)] + bs
    ctrs = [mod.Counter("q:gold:alice:0", BIG, 86400), mod.Counter("u:gold:alice:d", 0, 86400)]
    return (lambda: take(plan, ctrs, mono(), 1.0, 1)), t.close


CASES = ("bucket", "table1", "table3", "shared3", "plan")


def main() -> None:
    tmp = tempfile.mkdtemp(prefix="gwrl-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    base = best_ns(time.monotonic, 200_000)
    print(f"time.monotonic() alone: {base:.0f} ns (included below)")
    print(f"{'twin':8} {'case':8} {'ns/op':>8}")
    for name, mod in gwcore.twins("ratelimit"):
        for case in CASES:
            op, close = _op(mod, case, tmp)
            n = 200_000 if name == "cython" else 50_000
            ns = best_ns(op, n)
            close()
            print(f"{name:8} {case:8} {ns:8.0f}")
    __import__("shutil").rmtree(tmp, ignore_errors=True)


try:
    import pytest
except ImportError:  # plain script use
    pytest = None

if pytest is not None and __name__ != "__main__":
    pytest.importorskip("pytest_benchmark")

    @pytest.mark.parametrize("case", list(CASES))
    @pytest.mark.parametrize("twin", [n for n, _ in gwcore.twins("ratelimit")])
    def test_ratelimit(benchmark, twin, case, tmp_path):
        mod = dict(gwcore.twins("ratelimit"))[twin]
        benchmark.group = f"ratelimit {case}"
        op, close = _op(mod, case, str(tmp_path))
        r = op()
        assert r == 0.0 or r == (-1, 0.0)
        bench_ns(benchmark, op)
        close()

if __name__ == "__main__":
    main()
