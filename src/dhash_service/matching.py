"""From the library images near a hash to a decision: match, review or new.

Pure logic (no I/O), documented with its reasoning in ``docs/matching.md``. With ``d1`` the
distance to the nearest library image, ``T`` the match threshold, ``R`` the review threshold and
``A`` the ambiguity margin (all in bits):

* no library image within ``R`` → **new**;
* ``d1 <= T``, no *different* library hash within ``d1 + A``, hash not low-information →
  **match**;
* otherwise (``T < d1 <= R``, or ambiguous, or low-information) → **review**.

Confidence, in [0, 1], is the product of three documented terms::

    distance term    D = 1 - d1 / (R + 1)
    margin term      M = 1                          if the runner-up is more than A bits further
                       = 0.5 + 0.5 * gap / (A + 1)  otherwise (gap = d2 - d1)
    information term I = 0.5 if the hash is low-information, else 1

A match or review item gets ``D * M * I``. A new image gets ``I``: nothing was near, and a
low-information hash may have missed a neighbour a richer hash would have found. The runner-up
is the nearest library image whose hash *differs* from the nearest one's: library copies with
the identical hash are the same picture and do not make a decision ambiguous.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from dhash_service.errors import ConfigError

DecisionKind = Literal["match", "review", "new"]
ReviewReason = Literal["review_band", "ambiguous", "low_information"]

# Radius searches beyond this are refused: at 64 bits, 32 is half the hash.
MAX_RADIUS = 32

LOW_INFORMATION_FACTOR = 0.5


@dataclass(frozen=True)
class Thresholds:
    """Distances in bits; ``match <= review <= MAX_RADIUS``, ``ambiguity_margin >= 0``."""

    match: int
    review: int
    ambiguity_margin: int

    def __post_init__(self) -> None:
        if not 0 <= self.match <= self.review <= MAX_RADIUS:
            raise ConfigError(
                "thresholds must satisfy 0 <= DHASH_MATCH_THRESHOLD <= DHASH_REVIEW_THRESHOLD "
                f"<= {MAX_RADIUS}; got match={self.match}, review={self.review}"
            )
        if self.ambiguity_margin < 0:
            raise ConfigError(f"DHASH_AMBIGUITY_MARGIN must be >= 0, got {self.ambiguity_margin}")


@dataclass(frozen=True)
class Candidate:
    """A library image near the query."""

    image_id: int
    distance: int
    value: int


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    confidence: float
    reason: ReviewReason | None
    best: Candidate | None
    runner_up: Candidate | None
    candidates: tuple[Candidate, ...]


def distance_term(distance: int, thresholds: Thresholds) -> float:
    """1 at distance 0, falling linearly to 1 / (R + 1) at the review threshold R."""
    return max(0.0, 1.0 - distance / (thresholds.review + 1))


def margin_term(best: Candidate, runner_up: Candidate | None, thresholds: Thresholds) -> float:
    if runner_up is None:
        return 1.0
    gap = runner_up.distance - best.distance
    if gap > thresholds.ambiguity_margin:
        return 1.0
    return 0.5 + 0.5 * gap / (thresholds.ambiguity_margin + 1)


def information_term(low_information: bool) -> float:
    return LOW_INFORMATION_FACTOR if low_information else 1.0


def candidate_confidence(distance: int, low_information: bool, thresholds: Thresholds) -> float:
    """Confidence of one candidate on its own (distance and information terms, no margin)."""
    return round(distance_term(distance, thresholds) * information_term(low_information), 4)


def decide(
    candidates: Sequence[Candidate], *, low_information: bool, thresholds: Thresholds
) -> Decision:
    """Decide for one hash given its library neighbours (any order; beyond R is ignored)."""
    near = tuple(
        sorted(
            (c for c in candidates if c.distance <= thresholds.review),
            key=lambda c: (c.distance, c.image_id),
        )
    )
    info = information_term(low_information)
    if not near:
        return Decision("new", info, None, None, None, ())
    best = near[0]
    runner_up = next((c for c in near[1:] if c.value != best.value), None)
    confidence = round(
        distance_term(best.distance, thresholds) * margin_term(best, runner_up, thresholds) * info,
        4,
    )
    ambiguous = (
        runner_up is not None and runner_up.distance - best.distance <= thresholds.ambiguity_margin
    )
    reason: ReviewReason | None
    if best.distance > thresholds.match:
        reason = "review_band"
    elif ambiguous:
        reason = "ambiguous"
    elif low_information:
        reason = "low_information"
    else:
        reason = None
    kind: DecisionKind = "match" if reason is None else "review"
    return Decision(kind, confidence, reason, best, runner_up, near)
