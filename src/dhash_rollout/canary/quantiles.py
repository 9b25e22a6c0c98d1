"""Confidence sequences for a latency quantile of each release, read from its histogram.

Howard & Ramdas ("Sequential estimation of quantiles with applications to A/B-testing and
best-arm identification", Bernoulli 28(3), 2022, section 2, the fixed-quantile confidence
sequence of Theorem 1): for the q-quantile Q(q) of i.i.d. observations, the number of them at or
below Q(q) grows like a Binomial(t, q) process (or slower), so a time-uniform boundary for that
process turns into bounds on Q(q) that hold at every t at once. The boundary used here is the
one-sided beta-binomial mixture of :mod:`dhash_rollout.canary.mixture`:

* **lower bound** (the canary): at a bucket bound ``x``, if Q(q) ≤ x then P(X > x) ≤ 1 - q; a
  mixture e-value of the exceedances above ``x`` against ``1 - q`` reaching ``1/α`` rejects that,
  so Q(q) > x. The e-value only grows as ``x`` falls (more exceedances), so rejecting at any
  ``x ≥ Q(q)`` implies rejecting at Q(q) itself, whose crossing probability is at most α: the
  bound holds for every ``x`` and every poll together, with no union over the buckets.
* **upper bound** (stable): symmetrically, if Q(q) > x then P(X ≤ x) < q; rejecting that with
  the observations at or below ``x`` gives Q(q) ≤ x.

A Prometheus histogram knows its counts only at its bucket bounds, so the bounds are bucket
bounds: no interpolation inside a bucket (``histogram_quantile``'s linear guess is not
evidence). The comparison of two releases (Howard & Ramdas, section 5, A/B testing with one
confidence sequence per arm at α/2 each) declares the canary slower when its lower bound is at
least ``(1 + tolerance)`` times stable's upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise

import numpy as np

from dhash_rollout.canary.counts import RateRatioTest
from dhash_rollout.canary.mixture import (
    DEFAULT_CONCENTRATION,
    Grid,
    grid,
    log_e_value,
    logsumexp,
)


@dataclass(frozen=True)
class Histogram:
    """Observations per bucket: ``counts[i]`` fell in ``(bounds[i-1], bounds[i]]``, the last
    count above every finite bound (the ``+Inf`` bucket). Bounds in seconds, increasing."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError(
                f"{len(self.counts)} bucket counts for {len(self.bounds)} bounds "
                "(expected one more, the +Inf bucket)"
            )
        if any(b >= c for b, c in pairwise(self.bounds)):
            raise ValueError("histogram bounds must increase")
        if any(c < 0 for c in self.counts):
            raise ValueError("a bucket count cannot be negative (a counter went back)")

    @classmethod
    def empty(cls, bounds: Sequence[float]) -> Histogram:
        return cls(tuple(bounds), (0,) * (len(bounds) + 1))

    @classmethod
    def of(cls, bounds: Sequence[float], values: Sequence[float]) -> Histogram:
        """Observations bucketed as Prometheus does (``le``: at or below the bound)."""
        idx = np.searchsorted(np.asarray(bounds, dtype=np.float64), values, side="left")
        counts = np.bincount(idx, minlength=len(bounds) + 1)
        return cls(tuple(bounds), tuple(int(c) for c in counts))

    def plus(self, other: Histogram) -> Histogram:
        if other.bounds != self.bounds:
            raise ValueError("histograms with different bucket bounds cannot be added")
        return Histogram(
            self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        )

    @property
    def total(self) -> int:
        return sum(self.counts)

    def at_or_below(self, j: int) -> int:
        """Observations at or below ``bounds[j]``."""
        return sum(self.counts[: j + 1])


@lru_cache(maxsize=64)
def _grid(theta0: float, concentration: float) -> Grid:
    return grid(theta0, concentration)


def _last_true(n: int, test: Callable[[int], bool]) -> int | None:
    """The largest ``j < n`` with ``test(j)``, for a test true on a prefix (binary search)."""
    lo, hi = 0, n  # answer in [lo - 1, hi - 1]
    while lo < hi:
        mid = (lo + hi) // 2
        if test(mid):
            lo = mid + 1
        else:
            hi = mid
    return lo - 1 if lo > 0 else None


def lower_bound(
    hist: Histogram, q: float, alpha: float, concentration: float = DEFAULT_CONCENTRATION
) -> float | None:
    """The largest bucket bound ``x`` with Q(q) > x at level α, or None (no evidence yet)."""
    g = _grid(1.0 - q, concentration)
    need = math.log(1.0 / alpha)
    n = hist.total

    def rejects(j: int) -> bool:
        below = hist.at_or_below(j)
        return log_e_value(g, n - below, below) >= need

    j = _last_true(len(hist.bounds), rejects)
    return None if j is None else hist.bounds[j]


def upper_bound(
    hist: Histogram, q: float, alpha: float, concentration: float = DEFAULT_CONCENTRATION
) -> float | None:
    """The smallest bucket bound ``x`` with Q(q) ≤ x at level α, or None (unbounded yet)."""
    g = _grid(q, concentration)
    need = math.log(1.0 / alpha)
    n = hist.total
    m = len(hist.bounds)

    def rejects_from_top(i: int) -> bool:  # i counts down from the largest bound
        below = hist.at_or_below(m - 1 - i)
        return log_e_value(g, below, n - below) >= need

    i = _last_true(m, rejects_from_top)
    return None if i is None else hist.bounds[m - 1 - i]


@dataclass(frozen=True)
class QuantileComparison:
    """The two confidence bounds and whether they separate."""

    canary_lower: float | None  # Q_canary(q) > this
    stable_upper: float | None  # Q_stable(q) <= this
    slower: bool


def compare(
    canary: Histogram,
    stable: Histogram,
    q: float,
    alpha: float,
    *,
    tolerance: float = 0.0,
    concentration: float = DEFAULT_CONCENTRATION,
) -> QuantileComparison:
    """Is the canary's q-quantile above ``(1 + tolerance)`` × stable's, at level α (α/2 each)?"""
    lo = lower_bound(canary, q, alpha / 2.0, concentration)
    hi = upper_bound(stable, q, alpha / 2.0, concentration)
    slower = lo is not None and hi is not None and lo >= (1.0 + tolerance) * hi
    return QuantileComparison(lo, hi, slower)


LEVELS = (0.5, 0.75, 0.95)
MIN_REFERENCE = 20  # stable observations before its quantiles are used as thresholds


@dataclass(frozen=True)
class QuantileShiftTest:
    """Is the canary's hash time above stable's at its P50, P75 or P95? Anytime-valid.

    The canary's q-quantile is above stable's exactly when more than ``1 - q`` of the canary's
    observations exceed stable's q-quantile. So, per level q, the observations above a threshold
    ``x_t`` (the bucket bound at stable's q-quantile *so far*, fixed before the poll is read) are
    "slow events" of two processes with the poll's observation counts as exposure, and the
    rate-ratio test of :mod:`dhash_rollout.canary.counts` (Lindon & Malek 2022) tests that the
    canary has no more of them than stable. This is the two-bin case of the sequential
    equality-in-distribution test of Lindon, Sanden & Shirikian ("Rapid Regression Detection in
    Software Deployments through Sequential Testing", KDD 2022), one-sided, with the bin edge
    placed where the quantile of interest is.

    Each level's statistic is a test supermartingale under the null "the canary is nowhere
    stochastically slower" (each poll's factor has conditional mean at most one, whatever
    threshold was chosen from the past); their average is one too, so the three levels share one
    α without a union bound.
    """

    levels: tuple[float, ...]
    tests: tuple[RateRatioTest, ...]
    stable_so_far: Histogram
    thresholds: tuple[float | None, ...]  # the last thresholds used, per level

    @classmethod
    def start(
        cls,
        bounds: Sequence[float],
        reference_share: float,
        margin: float = 1.0,
        levels: tuple[float, ...] = LEVELS,
        concentration: float = DEFAULT_CONCENTRATION,
    ) -> QuantileShiftTest:
        one = RateRatioTest.start(reference_share, margin, concentration)
        return cls(levels, (one,) * len(levels), Histogram.empty(bounds), (None,) * len(levels))

    def _threshold(self, q: float) -> int | None:
        ref = self.stable_so_far
        if ref.total < MIN_REFERENCE:
            return None
        need = q * ref.total
        for j in range(len(ref.bounds)):
            if ref.at_or_below(j) >= need:
                return j
        return None  # stable's quantile is in the +Inf bucket: nothing above it to count

    def update(self, canary: Histogram, stable: Histogram) -> QuantileShiftTest:
        tests: list[RateRatioTest] = []
        used: list[float | None] = []
        for q, test in zip(self.levels, self.tests, strict=True):
            j = self._threshold(q)
            if j is None:
                tests.append(test)
                used.append(None)
                continue
            slow_c = canary.total - canary.at_or_below(j)
            slow_s = stable.total - stable.at_or_below(j)
            tests.append(test.update(slow_c, canary.total, slow_s, stable.total))
            used.append(canary.bounds[j])
        return QuantileShiftTest(
            self.levels, tuple(tests), self.stable_so_far.plus(stable), tuple(used)
        )

    @property
    def log_e_value(self) -> float:
        logs = np.array([[t.log_e_value for t in self.tests]], dtype=np.float64)
        return float(logsumexp(logs)[0]) - math.log(len(self.tests))
