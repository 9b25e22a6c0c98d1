"""What reviewers decided, by Hamming distance: the evidence for tuning the thresholds.

Pure: counts in, a table and suggestions out. For each distance the share of decided items
people confirmed as the same picture is given with its Wilson score interval (E. B. Wilson,
"Probable inference, the law of succession, and statistical inference", JASA 22 (1927)
209-212; the form and worked cases of R. G. Newcombe, "Two-sided confidence intervals for the
single proportion", Statistics in Medicine 17 (1998) 857-872, method 3), which stays inside
[0, 1] and is honest for the small counts a few days of review give.

Suggestions, at the confidence level ``z`` (1.96: 95 %):

* **match threshold**: the largest distance up to which, at every distance with decisions,
  the lower Wilson bound of the confirmed share is at least ``target`` (0.95 by default): items
  that close are confirmed so reliably that asking people is wasted time;
* **review threshold**: the smallest distance from which on, at every distance with decisions,
  the upper bound of the confirmed share is below ``1 - target``: farther items are almost
  never the same picture, so they need not be queued.

Neither is suggested without ``min_decisions`` decisions at the distances it rests on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

Z95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for a binomial proportion (no continuity correction)."""
    if trials <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be 0..{trials}, got {successes}")
    p = successes / trials
    z2 = z * z
    centre = p + z2 / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    denominator = 1 + z2 / trials
    low = (centre - spread) / denominator
    high = (centre + spread) / denominator
    return (max(0.0, low), min(1.0, high))


@dataclass(frozen=True)
class DistanceRow:
    distance: int | None  # None: items with no candidate (low information without a neighbour)
    confirmed: int
    rejected: int
    pending: int
    confirmed_low: float
    confirmed_high: float

    @property
    def decided(self) -> int:
        return self.confirmed + self.rejected

    @property
    def confirmed_share(self) -> float | None:
        return self.confirmed / self.decided if self.decided else None


@dataclass(frozen=True)
class DecisionStats:
    rows: list[DistanceRow]
    suggested_match_threshold: int | None
    suggested_review_threshold: int | None
    target: float

    @property
    def decided(self) -> int:
        return sum(r.decided for r in self.rows)

    @property
    def pending(self) -> int:
        return sum(r.pending for r in self.rows)


def decision_stats(
    counts: Iterable[tuple[int | None, str, int]],
    *,
    target: float = 0.95,
    min_decisions: int = 20,
    z: float = Z95,
) -> DecisionStats:
    """``counts``: (distance, status, items) with status pending, confirmed or rejected."""
    if not 0.5 < target < 1:
        raise ValueError("target must be between 0.5 and 1")
    table: dict[int | None, dict[str, int]] = {}
    for distance, status, items in counts:
        cell = table.setdefault(distance, {"pending": 0, "confirmed": 0, "rejected": 0})
        if status not in cell:
            raise ValueError(f"unknown review status {status!r}")
        cell[status] += items
    rows = []
    for distance in sorted(table, key=lambda d: (d is None, d or 0)):
        cell = table[distance]
        low, high = wilson_interval(cell["confirmed"], cell["confirmed"] + cell["rejected"], z)
        rows.append(
            DistanceRow(distance, cell["confirmed"], cell["rejected"], cell["pending"], low, high)
        )
    measured = [r for r in rows if r.distance is not None and r.decided]
    return DecisionStats(
        rows=rows,
        suggested_match_threshold=_match_suggestion(measured, target, min_decisions),
        suggested_review_threshold=_review_suggestion(measured, target, min_decisions),
        target=target,
    )


def _match_suggestion(rows: list[DistanceRow], target: float, minimum: int) -> int | None:
    best: int | None = None
    seen = 0
    for row in rows:  # nearest first
        if row.confirmed_low < target:
            break
        seen += row.decided
        best = row.distance
    return best if seen >= minimum else None


def _review_suggestion(rows: list[DistanceRow], target: float, minimum: int) -> int | None:
    best: int | None = None
    seen = 0
    for row in reversed(rows):  # farthest first
        if row.confirmed_high > 1 - target:
            break
        seen += row.decided
        best = row.distance
    if best is None or seen < minimum:
        return None
    return best - 1  # items at ``best`` and beyond need no review: the threshold is one closer
