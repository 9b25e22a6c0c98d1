"""The tables, as SQLAlchemy 2 declarative models; Alembic migrations must produce exactly these.

A *content* is one uploaded file (deduplicated by the sha256 of its bytes); extraction turns it
into one or more *images* (a page, a frame, an archive member), each with one *hash* per
algorithm. Library membership is its own table so that its increasing id is the watermark the
index pollers follow. *Matches* are the nearest library images found for a query image, a
*review item* is a low-confidence decision waiting for a person, *audit events* record who
changed what.

Hash values: a 64-bit hash is stored in ``hashes.value`` as a signed BIGINT holding the same 64
bits (two's complement, see :func:`to_signed64`), so it round-trips exactly on SQLite and
PostgreSQL; wider hashes go to ``hashes.wide`` as big-endian bytes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an ``INTEGER PRIMARY KEY``; PostgreSQL gets a BIGINT identity.
Id = BigInteger().with_variant(Integer(), "sqlite")

_SIGN_BIT = 1 << 63
_U64 = 1 << 64


def to_signed64(value: int) -> int:
    """Unsigned 64-bit hash -> the signed BIGINT with the same bits."""
    if not 0 <= value < _U64:
        raise ValueError("not an unsigned 64-bit value")
    return value - _U64 if value & _SIGN_BIT else value


def from_signed64(value: int) -> int:
    """Signed BIGINT as stored -> the unsigned 64-bit hash."""
    return value + _U64 if value < 0 else value


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends (SQLite keeps no zone, so we add it back)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Content(Base):
    __tablename__ = "contents"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    input_kind: Mapped[str] = mapped_column(String(32))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str | None] = mapped_column(String(1024))
    source: Mapped[str | None] = mapped_column(String(1024))
    failures: Mapped[list[dict[str, str]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("content_id", "locator"),
        CheckConstraint("decision IN ('match', 'review', 'new')", name="decision"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    content_id: Mapped[int] = mapped_column(ForeignKey("contents.id", ondelete="CASCADE"))
    locator: Mapped[str] = mapped_column(String(1024))
    kind: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    decision: Mapped[str] = mapped_column(String(16))
    confidence: Mapped[float] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ImageHashRow(Base):
    __tablename__ = "hashes"
    __table_args__ = (
        UniqueConstraint("image_id", "algorithm"),
        Index("ix_hashes_algorithm_value", "algorithm", "value"),
        CheckConstraint("(value IS NULL) <> (wide IS NULL)", name="one_value"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    algorithm: Mapped[str] = mapped_column(String(32))
    bits: Mapped[int] = mapped_column(SmallInteger)
    value: Mapped[int | None] = mapped_column(BigInteger)
    wide: Mapped[bytes | None] = mapped_column(LargeBinary)
    low_information: Mapped[bool] = mapped_column(Boolean)


class LibraryMember(Base):
    __tablename__ = "library_members"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), unique=True)
    added_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Match(Base):
    __tablename__ = "matches"
    __table_args__ = (
        UniqueConstraint("query_image_id", "library_image_id"),
        Index("ix_matches_library_image_id", "library_image_id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    query_image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    library_image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    rank: Mapped[int] = mapped_column(SmallInteger)
    distance: Mapped[int] = mapped_column(SmallInteger)
    confidence: Mapped[float] = mapped_column(Float)
    decision: Mapped[str] = mapped_column(String(16))


class ReviewItem(Base):
    __tablename__ = "review_items"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'confirmed', 'rejected')", name="status"),
        Index("ix_review_items_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), unique=True)
    candidate_image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL")
    )
    distance: Mapped[int | None] = mapped_column(SmallInteger)
    confidence: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    reviewer: Mapped[str | None] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(64))
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_id: Mapped[int] = mapped_column(BigInteger)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


class Thumbnail(Base):
    """A small preview of an image, made at ingest (``dhash_service.thumbnails``)."""

    __tablename__ = "thumbnails"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    media_type: Mapped[str] = mapped_column(String(32))
    width: Mapped[int] = mapped_column(SmallInteger)
    height: Mapped[int] = mapped_column(SmallInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ReviewClaim(Base):
    """Who is looking at a review item, until when: no two reviewers get the same item."""

    __tablename__ = "review_claims"
    __table_args__ = (Index("ix_review_claims_reviewer", "reviewer"),)

    review_id: Mapped[int] = mapped_column(
        ForeignKey("review_items.id", ondelete="CASCADE"), primary_key=True
    )
    reviewer: Mapped[str] = mapped_column(String(256))
    claimed_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReviewSkip(Base):
    """A reviewer passed on an item: it is not offered to them again (others still get it)."""

    __tablename__ = "review_skips"

    review_id: Mapped[int] = mapped_column(
        ForeignKey("review_items.id", ondelete="CASCADE"), primary_key=True
    )
    reviewer: Mapped[str] = mapped_column(String(256), primary_key=True)
    skipped_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReviewerSession(Base):
    """A console login: the sha256 of the session cookie (never the cookie), its CSRF token."""

    __tablename__ = "reviewer_sessions"
    __table_args__ = (Index("ix_reviewer_sessions_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reviewer: Mapped[str] = mapped_column(String(256))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
