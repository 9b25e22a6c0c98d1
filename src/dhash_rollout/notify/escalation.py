"""The escalation decision: which levels are due for an alert, given its age and state. Pure.

An alert enters the matrix at its start level (L1, or a later one for CRITICAL) at age 0; each
later level is due once the alert is as much older as the matrix puts between the two levels, so
with the guide's L1 0 / L2 15 / L3 30 minutes a CRITICAL that starts at L2 pages L3 15 minutes
later. An acknowledged or resolved alert pages nobody more; the levels already paged are told once
(an alert closed before anyone was paged tells nobody). A runner that was down pages every level
that became due meanwhile (each level's people learn of it), never one twice.

A *notice* is one thing sent about an alert, named ``page:<level index>``, ``ack`` or
``resolved``; the alert store claims each name once.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

ACK_NOTICE = "ack"
RESOLVED_NOTICE = "resolved"


def page_notice(level: int) -> str:
    return f"page:{level}"


def paged_level(notice: str) -> int | None:
    """The level index of a ``page:<n>`` notice, else None."""
    kind, _, level = notice.partition(":")
    return int(level) if kind == "page" else None


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


def notices_due(
    ladder: Ladder | None,
    age_seconds: float,
    taken: Collection[str],
    *,
    acked: bool,
    resolved: bool,
) -> tuple[str, ...]:
    """Every notice to send now for one alert, given the notices already sent or claimed.
    ``ladder`` None: this alert's severity does not escalate (anymore)."""
    paged = {level for n in taken if (level := paged_level(n)) is not None}
    if resolved or acked:
        closing = RESOLVED_NOTICE if resolved else ACK_NOTICE
        return (closing,) if paged and closing not in taken else ()
    if ladder is None:
        return ()
    return tuple(
        page_notice(level) for level in levels_due(ladder, age_seconds, paged, stopped=False)
    )
