"""The review console's use cases: the filtered queue, claiming the next item, an item with its
candidates, decisions one at a time and in bulk, skips, the decisions log and its statistics.

Every decision goes through ``ReviewQueue.resolve`` (``Repository.resolve_review``), the same
audited path the JSON API takes, with ``via`` saying which door it came in; the console only
adds the claim check (an item another reviewer holds is a Conflict). The queue-length gauge is
read from the store at scrape time, so it moves with every decision.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import get_args

import sqlalchemy as sa

from dhash_service.config import Settings
from dhash_service.errors import Conflict, InputError, NotFound
from dhash_service.hashing import configured_algorithm
from dhash_service.review import ReviewAction, ReviewQueue
from dhash_service.review_exchange import ImportedDecision
from dhash_service.review_stats import DecisionStats, decision_stats
from dhash_service.schemas import ReviewItemOut, ReviewReason
from dhash_service.store import schema
from dhash_service.store.console import (
    ClaimResult,
    ConsoleStore,
    DecisionRow,
    QueueFilter,
    QueueRow,
    ThumbnailRecord,
)
from dhash_service.store.models import utcnow
from dhash_service.store.repository import ImageRecord, MatchRecord, Repository

REASONS: tuple[str, ...] = get_args(ReviewReason)
# The age filter's choices (the console's select), in hours.
AGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
}
MAX_SOURCE_FILTER = 200
MAX_BULK = 500  # items one bulk action decides (one audited decision each)
MAX_QUEUE_PAGE = 200


def queue_filter(reason: str | None, source: str | None, age: str | None) -> QueueFilter:
    """A filter from the console's query string; unknown values are a clear InputError."""
    reason = reason or None
    source = (source or "").strip() or None
    age = age or None
    if reason is not None and reason not in REASONS:
        raise InputError(f"reason must be one of {', '.join(REASONS)}, got {reason!r}")
    if source is not None and len(source) > MAX_SOURCE_FILTER:
        raise InputError(f"the source filter is at most {MAX_SOURCE_FILTER} characters")
    if age is not None and age not in AGES:
        raise InputError(f"age must be one of {', '.join(AGES)}, got {age!r}")
    return QueueFilter(reason, source, AGES[age] if age else None)


@dataclass(frozen=True)
class QueuePage:
    rows: list[QueueRow]
    total: int  # pending items matching the filter
    pending: int  # pending items in all


@dataclass(frozen=True)
class ItemView:
    review: ReviewItemOut
    claim: ClaimResult | None  # None once the item is decided
    image: ImageRecord
    candidates: list[MatchRecord]
    thumbnails: set[int]  # image ids with a stored preview


@dataclass
class BulkResult:
    decided: list[int] = field(default_factory=list)
    refused: dict[int, str] = field(default_factory=dict)  # id -> why (claimed, resolved)


class ReviewDesk:
    def __init__(
        self,
        queue: ReviewQueue,
        repository: Repository,
        store: ConsoleStore,
        *,
        algorithm: str,
        claim_seconds: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._queue = queue
        self._repository = repository
        self._store = store
        self._algorithm = algorithm
        self._claim = timedelta(seconds=claim_seconds)
        self._clock = clock

    @property
    def store(self) -> ConsoleStore:
        return self._store

    def page(self, where: QueueFilter, limit: int = 50, offset: int = 0) -> QueuePage:
        if not 1 <= limit <= MAX_QUEUE_PAGE or offset < 0:
            raise InputError(f"limit must be 1..{MAX_QUEUE_PAGE} and offset >= 0")
        now = self._clock()
        return QueuePage(
            rows=self._store.queue(where, limit, offset, now),
            total=self._store.queue_count(where, now),
            pending=self._queue.pending_count(),
        )

    def pending_count(self) -> int:
        return self._queue.pending_count()

    def next_item(self, reviewer: str, where: QueueFilter) -> int | None:
        """Claim the next item for ``reviewer`` (their own live claim first)."""
        now = self._clock()
        return self._store.claim_next(reviewer, where, now, now + self._claim)

    def open_item(self, review_id: int, reviewer: str) -> ItemView:
        """An item with its candidates; a pending one is claimed for ``reviewer`` if free."""
        review = self._queue.get(review_id)
        claim = None
        if review.status == "pending":
            now = self._clock()
            claim = self._store.claim(review_id, reviewer, now, now + self._claim)
        image = self._repository.get_image(review.image_id, self._algorithm)
        candidates = self._repository.stored_matches(review.image_id, self._algorithm)
        if review.candidate_image_id is not None and not any(
            c.image_id == review.candidate_image_id for c in candidates
        ):
            candidates.insert(0, self._candidate(review.candidate_image_id, review.distance))
        ids = [image.id, *(c.image_id for c in candidates)]
        return ItemView(review, claim, image, candidates, self._store.thumbnail_ids(ids))

    def _candidate(self, image_id: int, distance: int | None) -> MatchRecord:
        other = self._repository.get_image(image_id, self._algorithm)
        return MatchRecord(image_id, distance or 0, 0.0, other.hash, other.source, other.locator)

    def decide(self, review_id: int, action: ReviewAction, reviewer: str) -> ReviewItemOut:
        return self._queue.resolve(
            review_id, action, reviewer, via="console", claimant=reviewer, now=self._clock()
        )

    def skip(self, review_id: int, reviewer: str) -> None:
        self._queue.get(review_id)  # NotFound for an unknown id
        self._store.skip(review_id, reviewer, self._clock())

    def release(self, review_id: int, reviewer: str) -> None:
        self._store.release(review_id, reviewer)

    def bulk(self, ids: Sequence[int], action: ReviewAction, reviewer: str) -> BulkResult:
        """Decide each item on its own (one audit event each); claimed or resolved ones are
        reported, not decided."""
        if not ids:
            raise InputError("select at least one item")
        if len(ids) > MAX_BULK:
            raise InputError(f"a bulk action decides at most {MAX_BULK} items, got {len(ids)}")
        result = BulkResult()
        for review_id in dict.fromkeys(ids):
            try:
                self._queue.resolve(
                    review_id, action, reviewer, via="bulk", claimant=reviewer, now=self._clock()
                )
                result.decided.append(review_id)
            except (Conflict, NotFound) as err:
                result.refused[review_id] = err.message
        return result

    def selection(self, where: QueueFilter) -> list[int]:
        """The filtered selection a bulk action applies to (at most ``MAX_BULK``)."""
        return self._store.pending_ids(where, self._clock(), MAX_BULK)

    def thumbnail(self, image_id: int) -> ThumbnailRecord:
        found = self._store.thumbnail(image_id)
        if found is None:
            raise NotFound(f"image {image_id} has no thumbnail", detail={"image_id": image_id})
        return found

    def decisions(self, limit: int = 100, offset: int = 0) -> list[DecisionRow]:
        return self._store.decisions(limit, offset)

    def all_decisions(self) -> Iterator[DecisionRow]:
        return self._store.all_decisions()

    def stats(self) -> DecisionStats:
        return decision_stats(self._store.counts_by_distance())

    def pending_rows(
        self, where: QueueFilter | None = None, batch: int = 500
    ) -> Iterator[QueueRow]:
        """Every pending item of the filter, oldest first, read in batches (offline export)."""
        offset = 0
        now = self._clock()
        while True:
            rows = self._store.queue(where or QueueFilter(), batch, offset, now)
            yield from rows
            if len(rows) < batch:
                return
            offset += batch

    def apply(self, decisions: Sequence[ImportedDecision], reviewer: str) -> BulkResult:
        """Apply a reviewed file (``dhash review import``): one audited decision per row."""
        result = BulkResult()
        for decision in decisions:
            try:
                self._queue.resolve(
                    decision.review_id,
                    decision.action,
                    reviewer,
                    via="import",
                    claimant=reviewer,
                    now=self._clock(),
                )
                result.decided.append(decision.review_id)
            except (Conflict, NotFound) as err:
                result.refused[decision.review_id] = err.message
        return result


def open_desk(settings: Settings) -> tuple[ReviewDesk, sa.Engine]:
    """A desk on the configured store, without a running service (the ``dhash review`` CLI).
    The caller disposes of the engine."""
    engine = schema.create_engine_for(settings.effective_database_url)
    repository = Repository(engine)
    desk = ReviewDesk(
        ReviewQueue(repository),
        repository,
        ConsoleStore(engine),
        algorithm=configured_algorithm(settings.hash_algorithm, settings.hash_size),
        claim_seconds=settings.review_claim_seconds,
    )
    return desk, engine
