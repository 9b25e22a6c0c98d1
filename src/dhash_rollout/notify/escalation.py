"""The escalation decision: which levels are due for an alert, given its age and state. Pure.

An alert enters the matrix at its start level (L1, or a later one for CRITICAL) at age 0; each
later level is due once the alert is as much older as the matrix puts between the two levels, so
with the guide's L1 0 / L2 15 / L3 30 minutes a CRITICAL that starts at L2 pages L3 15 minutes
later. An acknowledged or resolved alert pages nobody. A runner that was down pages every level
that became due meanwhile (each level's people learn of it), never one twice.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Ladder:
    """The matrix as this alert climbs it: seconds after opening per level, from ``start``."""

    after_seconds: tuple[float, ...]
    start: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.start < len(self.after_seconds):
            raise ValueError(f"start level {self.start} is outside the matrix")

    def offset(self, level: int) -> float:
        """Seconds after the alert opened at which ``level`` is due."""
        return self.after_seconds[level] - self.after_seconds[self.start]


def levels_due(
    ladder: Ladder, age_seconds: float, paged: Collection[int], *, stopped: bool
) -> tuple[int, ...]:
    """Levels to page now: due by ``age_seconds``, not paged yet; none once ``stopped``."""
    if stopped:
        return ()
    return tuple(
        level
        for level in range(ladder.start, len(ladder.after_seconds))
        if level not in paged and age_seconds >= ladder.offset(level)
    )


def next_due(
    ladder: Ladder, age_seconds: float, paged: Collection[int], *, stopped: bool
) -> tuple[int, float] | None:
    """The next level still to come and the seconds until it is due (for ``notify status``)."""
    if stopped:
        return None
    for level in range(ladder.start, len(ladder.after_seconds)):
        if level not in paged:
            return level, max(0.0, ladder.offset(level) - age_seconds)
    return None


def highest(paged: Sequence[int]) -> int | None:
    return max(paged) if paged else None
