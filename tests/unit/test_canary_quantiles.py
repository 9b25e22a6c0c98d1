"""Quantile confidence bounds from histograms (Howard & Ramdas 2022) and the quantile-shift test."""

from __future__ import annotations

import math

import pytest

from dhash_rollout.canary.mixture import grid, log_e_value
from dhash_rollout.canary.quantiles import (
    Histogram,
    QuantileShiftTest,
    compare,
    lower_bound,
    upper_bound,
)

BOUNDS = (0.01, 0.02, 0.05, 0.1, 0.2)


def hist(*counts: int) -> Histogram:
    return Histogram(BOUNDS, counts)


def brute_lower(h: Histogram, q: float, alpha: float) -> float | None:
    """Every bound tried, no search: the largest x whose exceedances reject Q(q) <= x."""
    g = grid(1 - q)
    ok = [
        b
        for j, b in enumerate(h.bounds)
        if log_e_value(g, h.total - h.at_or_below(j), h.at_or_below(j)) >= math.log(1 / alpha)
    ]
    return max(ok) if ok else None


def brute_upper(h: Histogram, q: float, alpha: float) -> float | None:
    g = grid(q)
    ok = [
        b
        for j, b in enumerate(h.bounds)
        if log_e_value(g, h.at_or_below(j), h.total - h.at_or_below(j)) >= math.log(1 / alpha)
    ]
    return min(ok) if ok else None


HISTOGRAMS = [
    hist(0, 0, 0, 0, 0, 0),
    hist(100, 0, 0, 0, 0, 0),
    hist(0, 0, 0, 0, 0, 100),
    hist(500, 300, 150, 40, 8, 2),
    hist(10, 10, 10, 10, 10, 10),
    hist(0, 900, 0, 0, 100, 0),
    hist(3, 1, 0, 0, 0, 1),
]


@pytest.mark.parametrize("h", HISTOGRAMS)
@pytest.mark.parametrize(("q", "alpha"), [(0.95, 0.05), (0.5, 0.01), (0.9, 0.0125)])
def test_the_bounds_are_the_extreme_bucket_bounds_the_mixture_rejects(
    h: Histogram, q: float, alpha: float
) -> None:
    assert lower_bound(h, q, alpha) == brute_lower(h, q, alpha)
    assert upper_bound(h, q, alpha) == brute_upper(h, q, alpha)


@pytest.mark.parametrize(
    ("counts", "lower", "upper"),
    [
        # 1000 observations, 6 % above 0.1 s and 1 % above 0.2 s: P95 in (0.1, 0.2]
        ((500, 300, 100, 40, 50, 10), 0.05, 0.2),
        # all of them at or below 0.01 s: P95 <= 0.01 s, nothing known below
        ((1000, 0, 0, 0, 0, 0), None, 0.01),
        # half of them in the +Inf bucket: P95 above every finite bound, no upper bound
        ((500, 0, 0, 0, 0, 500), 0.2, None),
        # five observations, three above 0.02 s: already P95 > 0.02 s; nothing bounds it above
        ((1, 1, 1, 1, 1, 0), 0.02, None),
        # two observations: nothing either way
        ((1, 0, 0, 1, 0, 0), None, None),
    ],
)
def test_p95_bounds_of_worked_histograms(
    counts: tuple[int, ...], lower: float | None, upper: float | None
) -> None:
    h = hist(*counts)
    assert (lower_bound(h, 0.95, 0.05), upper_bound(h, 0.95, 0.05)) == (lower, upper)


def test_two_releases_separate_only_when_the_bounds_do() -> None:
    slow = hist(0, 0, 100, 600, 200, 100)  # P95 above 0.2 s
    fast = hist(800, 150, 40, 10, 0, 0)  # P95 at or below 0.05 s
    assert compare(slow, fast, 0.95, 0.05).slower
    assert not compare(fast, slow, 0.95, 0.05).slower
    assert not compare(fast, fast, 0.95, 0.05).slower
    # a tolerance of 5x: 0.2 >= 5 x 0.05 is false
    assert not compare(slow, fast, 0.95, 0.05, tolerance=4.0).slower


def test_histograms_bucket_like_prometheus_and_refuse_nonsense() -> None:
    h = Histogram.of(BOUNDS, [0.01, 0.0101, 0.2, 0.3, 0.0])
    assert h.counts == (2, 1, 0, 0, 1, 1)  # le: a value equal to a bound is in that bucket
    with pytest.raises(ValueError, match="one more"):
        Histogram(BOUNDS, (1, 2))
    with pytest.raises(ValueError, match="increase"):
        Histogram((0.1, 0.05), (0, 0, 0))
    with pytest.raises(ValueError, match="negative"):
        hist(1, 0, 0, -1, 0, 0)
    with pytest.raises(ValueError, match="different bucket bounds"):
        h.plus(Histogram((1.0,), (0, 0)))


def _shift(n: int, canary: Histogram, stable: Histogram, share: float = 0.2) -> QuantileShiftTest:
    t = QuantileShiftTest.start(BOUNDS, share)
    for _ in range(n):
        t = t.update(canary, stable)
    return t


def test_the_shift_test_waits_for_a_reference_then_counts_above_stables_quantiles() -> None:
    stable = hist(40, 20, 20, 12, 6, 2)  # 100 per poll: P50 0.01..0.02, P75 0.05, P95 0.2
    slow = hist(5, 5, 5, 5, 3, 2)  # 25 per poll, shifted right
    t = QuantileShiftTest.start(BOUNDS, 0.2).update(slow, stable)
    assert t.thresholds == (None, None, None)  # the first poll had no reference before it
    assert t.log_e_value == 0.0
    t = t.update(slow, stable)
    assert t.thresholds == (0.02, 0.05, 0.2)
    assert _shift(10, slow, stable).log_e_value > math.log(40)


def test_the_same_distribution_gives_no_evidence() -> None:
    stable = hist(40, 20, 20, 12, 6, 2)
    same = hist(10, 5, 5, 3, 1, 1)  # a quarter of stable's per-poll counts, about the same shape
    assert _shift(30, same, stable).log_e_value < math.log(40)
    faster = hist(20, 5, 0, 0, 0, 0)
    assert _shift(30, faster, stable).log_e_value < 0.0
