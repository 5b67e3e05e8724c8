"""Balancer choices (pure logic: targets are plain records of up / outstanding / limit / weight)."""
from __future__ import annotations

from collections import Counter

from proxy.upstream.balancer import LeastRequest, RoundRobin, smooth_schedule


class T:
    def __init__(self, name, weight=1, up=True, outstanding=0, limit=100):
        self.name, self.weight, self.up, self.outstanding, self.limit = name, weight, up, outstanding, limit

    def __repr__(self):
        return self.name


def test_smooth_schedule_spreads_heavy_targets():
    assert smooth_schedule([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]
    assert smooth_schedule([1, 1]) == [0, 1]
    assert smooth_schedule([2, 0, 2]) == [0, 2]          # gcd reduced, weight 0 left out
    assert smooth_schedule([0, 0]) == []
    big = smooth_schedule([100000, 1])
    assert 1000 <= len(big) <= 1100 and 1 in big          # bounded, the light target still appears


def test_round_robin_weights_and_skips_unusable_targets():
    a, b, c = T("a", 2), T("b", 1), T("c", 1)
    rr = RoundRobin([a, b, c])
    assert Counter(rr.pick().name for _ in range(400)) == {"a": 200, "b": 100, "c": 100}
    b.up = False                      # unhealthy or ejected
    c.outstanding = c.limit           # circuit breaker full
    assert {rr.pick().name for _ in range(20)} == {"a"}
    a.up = False
    assert rr.pick() is None
    c.outstanding = 0
    assert rr.pick() is c


def test_round_robin_avoid_moves_a_retry_elsewhere():
    a, b = T("a"), T("b")
    rr = RoundRobin([a, b])
    for _ in range(10):
        assert rr.pick(a) is b
    b.up = False
    assert rr.pick(a) is None         # the link then falls back to pick(None)
    assert rr.pick() is a


def test_least_request_prefers_fewest_in_flight_per_weight():
    a, b = T("a", outstanding=3), T("b", outstanding=1)
    lr = LeastRequest([a, b])
    assert lr.pick() is b
    b.outstanding = 3
    assert {lr.pick().name for _ in range(10)} == {"a", "b"}     # ties alternate
    a2, b2 = T("a", weight=4, outstanding=3), T("b", weight=1, outstanding=1)
    lr = LeastRequest([a2, b2])
    assert lr.pick() is a2            # (3+1)/4 = 1 < (1+1)/1 = 2
    assert lr.pick(a2) is b2


def test_least_request_many_targets_uses_two_choices():
    ts = [T(f"t{i}", outstanding=10) for i in range(20)]
    ts[7].outstanding = 0
    lr = LeastRequest(ts)
    picks = Counter(lr.pick().name for _ in range(2000))
    # t7 wins whenever it is one of the two sampled: about 2/20 of picks, far above 1/20
    assert picks["t7"] > 150
    for t in ts:
        t.up = False
    assert lr.pick() is None
