"""Choosing a target of a VPC link for one request: weighted round robin, least outstanding.

A balancer only reads three attributes of each target, all kept current by the link
(``proxy.upstream.links``) so that picking costs a few attribute reads:

- ``up``: in rotation (healthy by the active checks, not ejected, weight > 0);
- ``outstanding``: requests in flight to it from this worker;
- ``limit``: the circuit breaker: no new request once ``outstanding`` reaches it.

``pick(avoid)`` returns a usable target other than ``avoid`` (the target a retry is
moving away from), or ``None`` when there is none.
"""
from __future__ import annotations

import math
import random
from functools import reduce

__all__ = ["RoundRobin", "LeastRequest", "make_balancer", "smooth_schedule"]

#: longest round-robin schedule; larger weight sums are scaled down to about this
MAX_SCHEDULE = 1024


def smooth_schedule(weights: list[int]) -> list[int]:
    """Indexes in nginx's smooth weighted round-robin order, one full cycle.

    [5, 1, 1] -> [0, 0, 1, 0, 2, 0, 0]: heavy targets are spread out, not bunched.
    Weight-0 entries never appear.
    """
    ws = [w for w in weights if w > 0]
    if not ws:
        return []
    g = reduce(math.gcd, ws)
    weights = [w // g for w in weights]
    total = sum(weights)
    if total > MAX_SCHEDULE:
        scale = MAX_SCHEDULE / total
        weights = [max(1, round(w * scale)) if w > 0 else 0 for w in weights]
        total = sum(weights)
    current = [0] * len(weights)
    out = []
    for _ in range(total):
        best = -1
        for i, w in enumerate(weights):
            if w <= 0:
                continue
            current[i] += w
            if best < 0 or current[i] > current[best]:
                best = i
        current[best] -= total
        out.append(best)
    return out


class RoundRobin:
    """Weighted round robin over a precomputed smooth schedule; skips unusable targets."""

    __slots__ = ("schedule", "i", "n")

    def __init__(self, targets):
        self.schedule = [targets[i] for i in smooth_schedule([t.weight for t in targets])]
        self.n = len(self.schedule)
        # workers start at different points so that N workers do not all hit target 0 first
        self.i = random.randrange(self.n) if self.n else 0

    def pick(self, avoid=None):
        sched = self.schedule
        n = self.n
        i = self.i
        for _ in range(n):
            i += 1
            if i >= n:
                i = 0
            t = sched[i]
            if t.up and t.outstanding < t.limit and t is not avoid:
                self.i = i
                return t
        return None


class LeastRequest:
    """Fewest outstanding requests per unit of weight; ties go round robin.

    Up to ``SCAN_ALL`` targets every usable one is compared; beyond that, two random
    choices (Envoy's and nginx's "power of two choices"), which is as good in practice
    and costs O(1).
    """

    SCAN_ALL = 8
    __slots__ = ("targets", "i", "n", "weighted")

    def __init__(self, targets):
        self.targets = [t for t in targets if t.weight > 0]
        self.n = len(self.targets)
        self.i = random.randrange(self.n) if self.n else 0
        self.weighted = len({t.weight for t in self.targets}) > 1

    def pick(self, avoid=None):
        n = self.n
        if n == 0:
            return None
        ts = self.targets
        if n > self.SCAN_ALL:
            return self._p2c(avoid)
        start = self.i + 1
        if start >= n:
            start = 0
        self.i = start
        best = None
        best_score = 0.0
        weighted = self.weighted
        for k in range(n):
            j = start + k
            if j >= n:
                j -= n
            t = ts[j]
            if not t.up or t.outstanding >= t.limit or t is avoid:
                continue
            score = (t.outstanding + 1) / t.weight if weighted else t.outstanding
            if best is None or score < best_score:
                best = t
                best_score = score
        return best

    def _p2c(self, avoid):
        ts = self.targets
        usable = [t for t in ts if t.up and t.outstanding < t.limit and t is not avoid]
        if not usable:
            return None
        if len(usable) == 1:
            return usable[0]
        a, b = random.sample(usable, 2)
        sa = (a.outstanding + 1) / a.weight
        sb = (b.outstanding + 1) / b.weight
        return a if sa <= sb else b


def make_balancer(kind: str, targets):
    if kind == "least_request":
        return LeastRequest(targets)
    return RoundRobin(targets)
