"""What every micro benchmark here does to time one operation, both ways it is run.

Imported as ``_timing`` (this folder is on sys.path both under pytest and when a bench file
is run as a script)."""
from __future__ import annotations

import timeit


def best_ns(op, number: int, repeat: int = 5) -> float:
    """Nanoseconds per call of ``op``: the best of ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(op, number=number, repeat=repeat)) / number * 1e9


def bench_ns(benchmark, op) -> None:
    """Time ``op`` with pytest-benchmark and record its median as ``ns_per_op`` (no figure
    under --benchmark-disable, where there are no stats)."""
    benchmark(op)
    if benchmark.stats is not None:
        benchmark.extra_info["ns_per_op"] = benchmark.stats.stats.median * 1e9
