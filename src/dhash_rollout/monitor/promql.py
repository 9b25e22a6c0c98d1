"""PromQL's ``increase``/``rate`` and ``histogram_quantile``, exactly as Prometheus 2.42 does.

Debian 12 ships ``prometheus`` 2.42.0, so this follows that version's source:

* ``extrapolatedRate`` in ``promql/functions.go`` (v2.42.0): at least two samples; counter
  resets add the value before the drop; the result is extrapolated to the range edges when the
  first/last sample lies within 1.1 average sample intervals of them (else by half an interval),
  and never to before the counter's extrapolated zero point. Range selectors in 2.x are closed
  on both ends: ``[t - range, t]``.
* ``bucketQuantile`` in ``promql/quantile.go`` (v2.42.0): NaN without a ``+Inf`` bucket or
  with fewer than two buckets or zero observations; buckets sorted, equal bounds coalesced,
  cumulative counts forced monotonic (``ensureMonotonic``); a rank in the ``+Inf`` bucket gives
  the highest finite bound; a first bucket with bound <= 0 gives that bound; otherwise linear
  interpolation inside the bucket (from 0 for the first one).

Timestamps are epoch seconds with Prometheus's millisecond resolution (see :func:`ms`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Point:
    t: float  # epoch seconds, millisecond resolution
    v: float


def ms(t: float) -> int:
    """A timestamp as Prometheus stores it."""
    return round(t * 1000)


def in_range(points: Sequence[Point], start: float, end: float) -> list[Point]:
    """The points a 2.x range selector ``[start, end]`` returns (both ends included)."""
    lo, hi = ms(start), ms(end)
    return [p for p in points if lo <= ms(p.t) <= hi]


def extrapolated_rate(
    points: Sequence[Point],
    range_start: float,
    range_end: float,
    *,
    is_counter: bool = True,
    is_rate: bool = False,
) -> float | None:
    """``increase`` (or ``rate`` with ``is_rate``) over points already selected in the range;
    ``None`` where PromQL returns no element (fewer than two points)."""
    if len(points) < 2:
        return None
    first, last = points[0], points[-1]
    result = last.v - first.v
    if is_counter:
        last_value = 0.0
        for point in points:
            if point.v < last_value:
                result += last_value
            last_value = point.v
    duration_to_start = (ms(first.t) - ms(range_start)) / 1000
    duration_to_end = (ms(range_end) - ms(last.t)) / 1000
    sampled_interval = (ms(last.t) - ms(first.t)) / 1000
    average_between = sampled_interval / (len(points) - 1)
    if is_counter and result > 0 and first.v >= 0:
        duration_to_zero = sampled_interval * (first.v / result)
        duration_to_start = min(duration_to_start, duration_to_zero)
    threshold = average_between * 1.1
    interval = sampled_interval
    interval += duration_to_start if duration_to_start < threshold else average_between / 2
    interval += duration_to_end if duration_to_end < threshold else average_between / 2
    result *= _go_div(interval, sampled_interval)
    if is_rate:
        result /= (ms(range_end) - ms(range_start)) / 1000
    return result


def increase(points: Sequence[Point], start: float, end: float) -> float | None:
    """``increase(x[end - start])`` evaluated at ``end``."""
    return extrapolated_rate(in_range(points, start, end), start, end)


def rate(points: Sequence[Point], start: float, end: float) -> float | None:
    return extrapolated_rate(in_range(points, start, end), start, end, is_rate=True)


@dataclass(frozen=True)
class Bucket:
    upper_bound: float
    count: float


def _coalesce(buckets: list[Bucket]) -> list[Bucket]:
    merged: list[Bucket] = []
    for bucket in buckets:
        if merged and merged[-1].upper_bound == bucket.upper_bound:
            merged[-1] = Bucket(bucket.upper_bound, merged[-1].count + bucket.count)
        else:
            merged.append(bucket)
    return merged


def _ensure_monotonic(buckets: list[Bucket]) -> list[Bucket]:
    highest = -math.inf
    fixed = []
    for bucket in buckets:
        if bucket.count > highest:
            highest = bucket.count
            fixed.append(bucket)
        else:
            fixed.append(Bucket(bucket.upper_bound, highest))
    return fixed


def bucket_quantile(q: float, buckets: Sequence[Bucket]) -> float:
    """``histogram_quantile(q, ...)`` over one set of cumulative ``le`` buckets."""
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(buckets, key=lambda b: b.upper_bound)
    if not ordered or not math.isinf(ordered[-1].upper_bound):
        return math.nan
    ordered = _ensure_monotonic(_coalesce(ordered))
    if len(ordered) < 2:
        return math.nan
    observations = ordered[-1].count
    if observations == 0:
        return math.nan
    rank = q * observations
    # Go's sort.Search over all but the +Inf bucket: the first whose count reaches the rank.
    b = next((i for i in range(len(ordered) - 1) if ordered[i].count >= rank), len(ordered) - 1)
    if b == len(ordered) - 1:
        return ordered[-2].upper_bound
    if b == 0 and ordered[0].upper_bound <= 0:
        return ordered[0].upper_bound
    bucket_start = 0.0
    bucket_end = ordered[b].upper_bound
    count = ordered[b].count
    if b > 0:
        bucket_start = ordered[b - 1].upper_bound
        count -= ordered[b - 1].count
        rank -= ordered[b - 1].count
    return bucket_start + (bucket_end - bucket_start) * _go_div(rank, count)


def _go_div(a: float, b: float) -> float:
    """IEEE division as Go does it: x/0 is ±Inf, 0/0 is NaN (Python would raise)."""
    if b == 0:
        return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a)
    return a / b
