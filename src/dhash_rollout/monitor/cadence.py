"""When the monitor polls: the guide's schedule, scaled by ``time_scale``.

The guide: a 60-minute window, every 30 s for the first 5 minutes, then every 2 minutes. Each
step polls every ``interval`` from the previous step's end up to its ``untilMinute``; a last
poll always falls at the end of the window (the 55 remaining minutes are not a multiple of 2),
so the verdict is reached over the whole window. ``time_scale`` N divides every interval, the
duration and the gate windows alike, so a scaled run is the same schedule, only faster.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

_EPS = 1e-9


@dataclass(frozen=True)
class Step:
    until_s: float
    interval_s: float


def poll_offsets(steps: Sequence[Step], duration_s: float, time_scale: float = 1.0) -> list[float]:
    """Seconds after the window start at which each poll happens (scaled), in order."""
    if duration_s <= 0 or time_scale <= 0:
        raise ValueError("duration and time scale must be > 0")
    offsets: list[float] = []
    start = 0.0
    for step in steps:
        end = min(step.until_s, duration_s)
        k = 1
        while start + k * step.interval_s <= end + _EPS:
            offsets.append(start + k * step.interval_s)
            k += 1
        start = end
        if end >= duration_s:
            break
    if not offsets or offsets[-1] < duration_s - _EPS:
        offsets.append(duration_s)
    return [round(offset / time_scale, 9) for offset in offsets]


def scaled(seconds: float, time_scale: float) -> float:
    return seconds / time_scale
