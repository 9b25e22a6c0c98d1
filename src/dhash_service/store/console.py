"""The review console's queries: the filtered queue, claims, skips, thumbnails, the decisions
log, decision counts by distance, and reviewer sessions.

Decisions themselves are not here: they go through ``Repository.resolve_review``, the audited
path the JSON API uses, so the audit trail (and what a restore re-applies from it) is one.

Claims: no two reviewers get the same item while a claim lives. Every claim is one upsert that
only succeeds when the item is unclaimed, its claim expired, or the claimant already holds it
(``INSERT ... ON CONFLICT DO UPDATE ... WHERE``), so the database, not a read-then-write in
Python, decides who wins. On PostgreSQL the next item is picked with ``FOR UPDATE SKIP
LOCKED``, so concurrent reviewers skip each other's candidates instead of queueing on them; on
SQLite the write transaction starts with ``BEGIN IMMEDIATE``, which serialises claimers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from dhash_service.store.models import (
    AuditEvent,
    Content,
    Image,
    ReviewClaim,
    ReviewerSession,
    ReviewItem,
    ReviewSkip,
    Thumbnail,
)
from dhash_service.store.repository import read_transaction, write_transaction

reviews = cast(sa.Table, ReviewItem.__table__)
images = cast(sa.Table, Image.__table__)
contents = cast(sa.Table, Content.__table__)
claims = cast(sa.Table, ReviewClaim.__table__)
skips = cast(sa.Table, ReviewSkip.__table__)
thumbnails = cast(sa.Table, Thumbnail.__table__)
sessions = cast(sa.Table, ReviewerSession.__table__)
audit = cast(sa.Table, AuditEvent.__table__)

DECISION_ACTIONS = ("review_confirm", "review_reject")
# Candidates tried per claim_next call before giving up on a queue others are racing through.
_CLAIM_ATTEMPTS = 8


@dataclass(frozen=True)
class QueueFilter:
    """Which pending items a reviewer works on; every field narrows the queue."""

    reason: str | None = None
    source: str | None = None  # a substring of the upload's source
    older_than: timedelta | None = None


@dataclass(frozen=True)
class QueueRow:
    id: int
    image_id: int
    candidate_image_id: int | None
    distance: int | None
    confidence: float
    reason: str
    created_at: datetime
    source: str | None
    locator: str
    claimed_by: str | None  # a live claim's holder
    claim_expires_at: datetime | None


@dataclass(frozen=True)
class ClaimResult:
    review_id: int
    claimed: bool  # True: the caller holds it now; False: ``holder`` does
    holder: str | None
    expires_at: datetime | None


@dataclass(frozen=True)
class ThumbnailRecord:
    data: bytes
    media_type: str
    width: int
    height: int


@dataclass(frozen=True)
class DecisionRow:
    event_id: int
    at: datetime
    reviewer: str
    action: str  # confirm | reject
    review_id: int
    via: str
    image_id: int | None
    candidate_image_id: int | None
    distance: int | None
    reason: str | None


@dataclass(frozen=True)
class SessionRecord:
    reviewer: str
    csrf_token: str
    expires_at: datetime


class ConsoleStore:
    """Console queries over the service's engine; one short transaction per method."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"

    def _write(self) -> AbstractContextManager[sa.Connection]:
        return write_transaction(self.engine)

    def _read(self) -> AbstractContextManager[sa.Connection]:
        return read_transaction(self.engine)

    # --- the queue -------------------------------------------------------------------------------

    @staticmethod
    def _pending(query: sa.Select[Any], where: QueueFilter, now: datetime) -> sa.Select[Any]:
        query = query.where(reviews.c.status == "pending")
        if where.reason:
            query = query.where(reviews.c.reason == where.reason)
        if where.source:
            query = query.where(contents.c.source.contains(where.source, autoescape=True))
        if where.older_than is not None:
            query = query.where(reviews.c.created_at <= now - where.older_than)
        return query

    @staticmethod
    def _joined(query: sa.Select[Any], now: datetime) -> sa.Select[Any]:
        return (
            query.join(images, images.c.id == reviews.c.image_id)
            .join(contents, contents.c.id == images.c.content_id)
            .outerjoin(claims, (claims.c.review_id == reviews.c.id) & (claims.c.expires_at > now))
        )

    def queue(self, where: QueueFilter, limit: int, offset: int, now: datetime) -> list[QueueRow]:
        """Pending items, oldest first (as moderation queues work), with their live claims."""
        query = self._joined(
            sa.select(
                reviews,
                contents.c.source,
                images.c.locator,
                claims.c.reviewer.label("claimed_by"),
                claims.c.expires_at.label("claim_expires_at"),
            ).select_from(reviews),
            now,
        )
        query = self._pending(query, where, now).order_by(reviews.c.id).limit(limit).offset(offset)
        with self._read() as connection:
            rows = connection.execute(query).all()
        return [
            QueueRow(
                id=r.id,
                image_id=r.image_id,
                candidate_image_id=r.candidate_image_id,
                distance=r.distance,
                confidence=r.confidence,
                reason=r.reason,
                created_at=r.created_at,
                source=r.source,
                locator=r.locator,
                claimed_by=r.claimed_by,
                claim_expires_at=r.claim_expires_at,
            )
            for r in rows
        ]

    def queue_count(self, where: QueueFilter, now: datetime) -> int:
        query = self._joined(sa.select(sa.func.count()).select_from(reviews), now)
        with self._read() as connection:
            return int(connection.execute(self._pending(query, where, now)).scalar_one())

    def pending_ids(self, where: QueueFilter, now: datetime, limit: int) -> list[int]:
        """Ids of the filtered selection (bulk decisions), oldest first."""
        query = self._joined(sa.select(reviews.c.id).select_from(reviews), now)
        query = self._pending(query, where, now).order_by(reviews.c.id).limit(limit)
        with self._read() as connection:
            return [int(i) for i in connection.execute(query).scalars()]

    # --- claims ----------------------------------------------------------------------------------

    def _take(
        self,
        connection: sa.Connection,
        review_id: int,
        reviewer: str,
        now: datetime,
        expires_at: datetime,
    ) -> bool:
        """Claim ``review_id`` unless someone else holds a live claim on it; True when held."""
        dialect_insert = sqlite.insert if self._sqlite else postgresql.insert
        statement = (
            dialect_insert(claims)
            .values(review_id=review_id, reviewer=reviewer, claimed_at=now, expires_at=expires_at)
            .on_conflict_do_update(
                index_elements=[claims.c.review_id],
                set_={"reviewer": reviewer, "claimed_at": now, "expires_at": expires_at},
                where=(claims.c.expires_at <= now) | (claims.c.reviewer == reviewer),
            )
            .returning(claims.c.review_id)  # a row only when inserted or taken over
        )
        return connection.execute(statement).scalar_one_or_none() is not None

    def claim_next(
        self, reviewer: str, where: QueueFilter, now: datetime, expires_at: datetime
    ) -> int | None:
        """The reviewer's own live claim within the filter, else the oldest item nobody holds and
        they did not skip, now claimed by them; None when the filtered queue has nothing left."""
        mine = (
            sa.select(reviews.c.id)
            .join(claims, claims.c.review_id == reviews.c.id)
            .join(images, images.c.id == reviews.c.image_id)
            .join(contents, contents.c.id == images.c.content_id)
            .where((claims.c.reviewer == reviewer) & (claims.c.expires_at > now))
        )
        skipped = sa.select(skips.c.review_id).where(
            (skips.c.review_id == reviews.c.id) & (skips.c.reviewer == reviewer)
        )
        tried: list[int] = []
        with self._write() as connection:
            own = connection.execute(
                self._pending(mine, where, now).order_by(reviews.c.id).limit(1)
            ).scalar_one_or_none()
            if own is not None and self._take(connection, int(own), reviewer, now, expires_at):
                return int(own)
            for _ in range(_CLAIM_ATTEMPTS):
                free = (
                    sa.select(reviews.c.id)
                    .select_from(reviews)
                    .join(images, images.c.id == reviews.c.image_id)
                    .join(contents, contents.c.id == images.c.content_id)
                    .where(~sa.exists(skipped))
                    .where(
                        ~sa.exists(
                            sa.select(claims.c.review_id).where(
                                (claims.c.review_id == reviews.c.id) & (claims.c.expires_at > now)
                            )
                        )
                    )
                )
                if tried:
                    free = free.where(reviews.c.id.not_in(tried))
                free = self._pending(free, where, now).order_by(reviews.c.id).limit(1)
                if not self._sqlite:
                    free = free.with_for_update(skip_locked=True, of=reviews)
                found = connection.execute(free).scalar_one_or_none()
                if found is None:
                    return None
                if self._take(connection, int(found), reviewer, now, expires_at):
                    return int(found)
                tried.append(int(found))  # someone claimed it between our read and our write
        return None

    def claim(
        self, review_id: int, reviewer: str, now: datetime, expires_at: datetime
    ) -> ClaimResult:
        """Claim one item (opened by its address); says who holds it when someone else does."""
        with self._write() as connection:
            if not self._sqlite:  # serialise with other claimers of this row
                connection.execute(
                    sa.select(reviews.c.id).where(reviews.c.id == review_id).with_for_update()
                )
            if self._take(connection, review_id, reviewer, now, expires_at):
                return ClaimResult(review_id, True, reviewer, expires_at)
            held = connection.execute(
                sa.select(claims.c.reviewer, claims.c.expires_at).where(
                    claims.c.review_id == review_id
                )
            ).one_or_none()
        if held is None:  # pragma: no cover - the upsert only fails against a live claim
            return ClaimResult(review_id, False, None, None)
        return ClaimResult(review_id, False, held.reviewer, held.expires_at)

    def release(self, review_id: int, reviewer: str) -> None:
        with self._write() as connection:
            connection.execute(
                sa.delete(claims).where(
                    (claims.c.review_id == review_id) & (claims.c.reviewer == reviewer)
                )
            )

    def skip(self, review_id: int, reviewer: str, now: datetime) -> None:
        """Pass on an item: the claim ends and the item is not offered to this reviewer again."""
        dialect_insert = sqlite.insert if self._sqlite else postgresql.insert
        with self._write() as connection:
            connection.execute(
                dialect_insert(skips)
                .values(review_id=review_id, reviewer=reviewer, skipped_at=now)
                .on_conflict_do_nothing()
            )
            connection.execute(
                sa.delete(claims).where(
                    (claims.c.review_id == review_id) & (claims.c.reviewer == reviewer)
                )
            )

    # --- thumbnails ------------------------------------------------------------------------------

    def thumbnail(self, image_id: int) -> ThumbnailRecord | None:
        with self._read() as connection:
            row = connection.execute(
                sa.select(thumbnails).where(thumbnails.c.image_id == image_id)
            ).one_or_none()
        if row is None:
            return None
        return ThumbnailRecord(bytes(row.data), row.media_type, row.width, row.height)

    def thumbnail_ids(self, image_ids: list[int]) -> set[int]:
        if not image_ids:
            return set()
        with self._read() as connection:
            return {
                int(i)
                for i in connection.execute(
                    sa.select(thumbnails.c.image_id).where(thumbnails.c.image_id.in_(image_ids))
                ).scalars()
            }

    # --- decisions -------------------------------------------------------------------------------

    def decisions(self, limit: int, offset: int = 0, after_id: int = 0) -> list[DecisionRow]:
        """Review decisions from the audit trail, newest first (``after_id``: oldest first)."""
        query = (
            sa.select(
                audit.c.id,
                audit.c.at,
                audit.c.actor,
                audit.c.action,
                audit.c.subject_id,
                audit.c.detail,
                reviews.c.image_id,
                reviews.c.candidate_image_id,
                reviews.c.distance,
                reviews.c.reason,
            )
            .select_from(audit)
            .outerjoin(reviews, reviews.c.id == audit.c.subject_id)
            .where((audit.c.subject_type == "review_item") & audit.c.action.in_(DECISION_ACTIONS))
        )
        if after_id:
            query = query.where(audit.c.id > after_id).order_by(audit.c.id)
        else:
            query = query.order_by(audit.c.id.desc())
        query = query.limit(limit).offset(offset)
        with self._read() as connection:
            rows = connection.execute(query).all()
        return [
            DecisionRow(
                event_id=r.id,
                at=r.at,
                reviewer=r.actor,
                action=str(r.action).removeprefix("review_"),
                review_id=r.subject_id,
                via=str((r.detail or {}).get("via", "api")),
                image_id=r.image_id,
                candidate_image_id=r.candidate_image_id,
                distance=r.distance,
                reason=r.reason,
            )
            for r in rows
        ]

    def all_decisions(self, batch: int = 1000) -> Iterator[DecisionRow]:
        """Every decision, oldest first, read in batches (exports of any size)."""
        after = 0
        while True:
            rows = self.decisions(batch, after_id=after)
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1].event_id

    def counts_by_distance(self) -> list[tuple[int | None, str, int]]:
        """(distance, status, items) over every review item, for the threshold statistics."""
        query = (
            sa.select(reviews.c.distance, reviews.c.status, sa.func.count())
            .group_by(reviews.c.distance, reviews.c.status)
            .order_by(reviews.c.distance, reviews.c.status)
        )
        with self._read() as connection:
            return [(r[0], str(r[1]), int(r[2])) for r in connection.execute(query).all()]

    # --- sessions --------------------------------------------------------------------------------

    def create_session(
        self, session_hash: str, reviewer: str, csrf_token: str, now: datetime, expires_at: datetime
    ) -> None:
        with self._write() as connection:
            connection.execute(sa.delete(sessions).where(sessions.c.expires_at <= now))
            connection.execute(
                sa.insert(sessions).values(
                    id=session_hash,
                    reviewer=reviewer,
                    csrf_token=csrf_token,
                    created_at=now,
                    expires_at=expires_at,
                )
            )

    def session(self, session_hash: str, now: datetime) -> SessionRecord | None:
        with self._read() as connection:
            row = connection.execute(
                sa.select(sessions).where(
                    (sessions.c.id == session_hash) & (sessions.c.expires_at > now)
                )
            ).one_or_none()
        if row is None:
            return None
        return SessionRecord(row.reviewer, row.csrf_token, row.expires_at)

    def end_session(self, session_hash: str) -> None:
        with self._write() as connection:
            connection.execute(sa.delete(sessions).where(sessions.c.id == session_hash))
