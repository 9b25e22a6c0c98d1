"""The low-confidence queue: decisions the matcher was unsure of, waiting for a person.

An item is created in the same transaction as the image it is about (see ``matching`` for when),
and resolved exactly once: *confirm* says the candidate is the same picture, *reject* says it is
not. The queue length is read from the store, so every worker reports the same number.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, cast

from dhash_service.errors import InputError
from dhash_service.schemas import ReviewItemOut, ReviewReason, ReviewStatus
from dhash_service.store.repository import Repository, ReviewRecord

ReviewAction = Literal["confirm", "reject"]

STATUSES: tuple[ReviewStatus, ...] = ("pending", "confirmed", "rejected")
ACTIONS: tuple[ReviewAction, ...] = ("confirm", "reject")
MAX_PAGE = 1000
MAX_REVIEWER_LENGTH = 256


def review_out(record: ReviewRecord) -> ReviewItemOut:
    return ReviewItemOut(
        id=record.id,
        image_id=record.image_id,
        candidate_image_id=record.candidate_image_id,
        distance=record.distance,
        confidence=record.confidence,
        reason=cast(ReviewReason, record.reason),
        status=cast(ReviewStatus, record.status),
        reviewer=record.reviewer,
        created_at=record.created_at,
        resolved_at=record.resolved_at,
    )


class ReviewQueue:
    """List, count and resolve review items; validates what callers pass in."""

    def __init__(self, repository: Repository) -> None:
        self._repository = repository

    def items(
        self, status: str = "pending", limit: int = 100, offset: int = 0
    ) -> list[ReviewItemOut]:
        if status not in STATUSES:
            raise InputError(
                f"status must be one of {', '.join(STATUSES)}, got {status!r}",
                detail={"status": status},
            )
        if not 1 <= limit <= MAX_PAGE or offset < 0:
            raise InputError(
                f"limit must be 1..{MAX_PAGE} and offset >= 0, got limit={limit} offset={offset}"
            )
        return [review_out(r) for r in self._repository.review_items(status, limit, offset)]

    def get(self, item_id: int) -> ReviewItemOut:
        return review_out(self._repository.get_review(item_id))

    def resolve(
        self,
        item_id: int,
        action: str,
        reviewer: str,
        *,
        via: str = "api",
        claimant: str | None = None,
        now: datetime | None = None,
    ) -> ReviewItemOut:
        """Raises NotFound for an unknown id and Conflict when it was already resolved (or, with
        ``claimant``, when another reviewer holds a live claim on it). The one audited path
        every decision takes: API, console, bulk and import."""
        if action not in ACTIONS:
            raise InputError(
                f"action must be one of {', '.join(ACTIONS)}, got {action!r}",
                detail={"action": action},
            )
        name = reviewer.strip()
        if not name or len(name) > MAX_REVIEWER_LENGTH:
            raise InputError(f"reviewer must be 1..{MAX_REVIEWER_LENGTH} characters")
        return review_out(
            self._repository.resolve_review(
                item_id, action, name, via=via, claimant=claimant, now=now
            )
        )

    def pending_count(self) -> int:
        return self._repository.count_reviews("pending")
