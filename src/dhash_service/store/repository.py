"""The repository: every query and write the service makes, in short explicit transactions.

Writes commit before they return, so whatever the API acknowledges is on disk. Library
membership ids double as the index watermark, so they must become visible in id order: on
PostgreSQL each transaction that adds members takes a transaction-scoped advisory lock right
before inserting them (sequence value, commit and unlock then happen in the same order for
every writer); on SQLite writers are serialised by the database lock anyway (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import numpy as np
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from dhash_service.errors import Conflict, NotFound
from dhash_service.index.protocol import word_count
from dhash_service.index.sync import LibraryBatch
from dhash_service.store.direct import DirectStatement
from dhash_service.store.models import (
    AuditEvent,
    Content,
    Image,
    ImageHashRow,
    LibraryMember,
    Match,
    ReviewClaim,
    ReviewItem,
    Thumbnail,
    from_signed64,
    to_signed64,
    utcnow,
)
from dhash_service.store.one_statement import (
    MAX_IMAGES,
    SHAPES_KEPT,
    ImageShape,
    Shape,
    statement_for,
)
from dhash_service.store.schema import LIBRARY_LOCK_KEY

contents = cast(sa.Table, Content.__table__)
images = cast(sa.Table, Image.__table__)
hashes = cast(sa.Table, ImageHashRow.__table__)
library = cast(sa.Table, LibraryMember.__table__)
matches = cast(sa.Table, Match.__table__)
reviews = cast(sa.Table, ReviewItem.__table__)
audit = cast(sa.Table, AuditEvent.__table__)
thumbnails = cast(sa.Table, Thumbnail.__table__)
claims = cast(sa.Table, ReviewClaim.__table__)

# The statements of the ingest path, built once. SQLAlchemy memoizes a statement object's cache
# key, so a prebuilt statement executed with parameters skips both the construction and the
# cache-key walk that a fresh ``insert().values(...)`` pays on every call (a profile of the
# ingest put that walk at a tenth of the worker's Python time).
_LOOKUP = sa.select(
    sa.select(contents.c.id)
    .where(contents.c.sha256 == sa.bindparam("sha256"))
    .scalar_subquery()
    .label("content_id"),
    sa.select(sa.func.max(library.c.id)).scalar_subquery().label("newest"),
)
_NEWEST_MEMBER = sa.select(sa.func.max(library.c.id))
_INSERT_CONTENT = sa.insert(contents).returning(contents.c.id)
_INSERT_IMAGE = sa.insert(images).returning(images.c.id)
_INSERT_HASH = sa.insert(hashes)
_INSERT_MATCHES = sa.insert(matches)
_INSERT_REVIEW = sa.insert(reviews).returning(reviews.c.id)
_INSERT_AUDIT = sa.insert(audit)
_INSERT_MEMBERS = sa.insert(library)
_INSERT_THUMBNAIL = sa.insert(thumbnails)


# --- values going in -------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredHash:
    """A hash as the store sees it: unsigned value, algorithm, length, information flag."""

    value: int
    algorithm: str
    bits: int
    low_information: bool

    def hex(self) -> str:
        return f"{self.value:0{self.bits // 4}x}"


@dataclass(frozen=True)
class NewMatch:
    library_image_id: int
    rank: int
    distance: int
    confidence: float
    # The library image's hash value as the index holds it, for the answer; not stored (the
    # library image's own hash row has it).
    library_hash: int | None = None


@dataclass(frozen=True)
class NewReview:
    candidate_image_id: int | None
    distance: int | None
    confidence: float
    reason: str


@dataclass(frozen=True)
class NewThumbnail:
    data: bytes
    width: int
    height: int
    media_type: str


@dataclass(frozen=True)
class NewImage:
    locator: str
    kind: str
    width: int
    height: int
    hash: StoredHash
    decision: str
    confidence: float
    matches: Sequence[NewMatch] = ()
    review: NewReview | None = None
    thumbnail: NewThumbnail | None = None


@dataclass(frozen=True)
class NewContent:
    sha256: str
    input_kind: str
    size_bytes: int
    filename: str | None
    source: str | None
    failures: list[dict[str, str]]
    images: Sequence[NewImage]
    library: bool
    actor: str = "api"


@dataclass(frozen=True)
class SavedImage:
    """The ids one stored image got."""

    id: int
    review_id: int | None


@dataclass(frozen=True)
class SavedContent:
    """What a stored upload got: its id, its images' ids (in the order given), and where the
    library images it was matched against came from (read in the same transaction), so the
    caller can answer without reading back what it has just written."""

    id: int
    images: list[SavedImage]
    refs: dict[int, ImageRef]


@dataclass(frozen=True)
class IngestLookup:
    """Read before an upload is hashed: its content id if these bytes are stored already, and
    the largest library membership id (the index's catch-up check)."""

    content_id: int | None
    newest_member_id: int


class DuplicateContent(Exception):
    """The sha256 was stored by someone else first (a concurrent ingest of the same bytes)."""


# --- values coming out -------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchRecord:
    image_id: int
    distance: int
    confidence: float
    hash: StoredHash | None
    source: str | None
    locator: str | None


@dataclass(frozen=True)
class ImageRecord:
    id: int
    content_id: int
    sha256: str
    source: str | None
    locator: str
    kind: str
    width: int
    height: int
    hash: StoredHash | None
    library: bool
    decision: str
    confidence: float
    created_at: datetime
    matches: list[MatchRecord] = field(default_factory=list)
    review_id: int | None = None


@dataclass(frozen=True)
class ContentRecord:
    id: int
    sha256: str
    input_kind: str
    source: str | None
    failures: list[dict[str, str]]
    images: list[ImageRecord]

    @property
    def library(self) -> bool:
        return bool(self.images) and all(image.library for image in self.images)


@dataclass(frozen=True)
class ImageRef:
    """Where a library image came from, for search results."""

    source: str | None
    locator: str


@dataclass(frozen=True)
class ReviewRecord:
    id: int
    image_id: int
    candidate_image_id: int | None
    distance: int | None
    confidence: float
    reason: str
    status: str
    reviewer: str | None
    created_at: datetime
    resolved_at: datetime | None


def _hash_columns(value: StoredHash) -> dict[str, Any]:
    if value.bits == 64:
        return {"value": to_signed64(value.value), "wide": None}
    return {"value": None, "wide": value.value.to_bytes(value.bits // 8, "big")}


def _hash_from_row(
    algorithm: str | None, bits: int | None, value: int | None, wide: bytes | None, low: bool | None
) -> StoredHash | None:
    if algorithm is None or bits is None:
        return None
    number = from_signed64(value) if value is not None else int.from_bytes(wide or b"", "big")
    return StoredHash(number, algorithm, bits, bool(low))


# --- the rows an ingest writes (both write paths build them here) ------------------------------
# A foreign key given as None is filled in by the statement (``one_statement``).


def _content_row(new: NewContent, now: datetime) -> dict[str, Any]:
    return {
        "sha256": new.sha256,
        "input_kind": new.input_kind,
        "size_bytes": new.size_bytes,
        "filename": new.filename,
        "source": new.source,
        "failures": new.failures,
        "created_at": now,
    }


def _ingest_audit_row(new: NewContent, content_id: int | None, now: datetime) -> dict[str, Any]:
    row = {
        "at": now,
        "actor": new.actor,
        "action": "ingest",
        "subject_type": "content",
        "detail": {"sha256": new.sha256, "images": len(new.images), "library": new.library},
    }
    return row if content_id is None else {**row, "subject_id": content_id}


def _image_row(image: NewImage, content_id: int | None, now: datetime) -> dict[str, Any]:
    row = {
        "locator": image.locator,
        "kind": image.kind,
        "width": image.width,
        "height": image.height,
        "decision": image.decision,
        "confidence": image.confidence,
        "created_at": now,
    }
    return row if content_id is None else {**row, "content_id": content_id}


def _with_image(row: dict[str, Any], key: str, image_id: int | None) -> dict[str, Any]:
    return row if image_id is None else {**row, key: image_id}


def _hash_row(image: NewImage, image_id: int | None) -> dict[str, Any]:
    row = {
        "algorithm": image.hash.algorithm,
        "bits": image.hash.bits,
        "low_information": image.hash.low_information,
        **_hash_columns(image.hash),
    }
    return _with_image(row, "image_id", image_id)


def _thumbnail_row(thumbnail: NewThumbnail, image_id: int | None) -> dict[str, Any]:
    row = {
        "media_type": thumbnail.media_type,
        "width": thumbnail.width,
        "height": thumbnail.height,
        "data": thumbnail.data,
    }
    return _with_image(row, "image_id", image_id)


def _match_rows(image: NewImage, image_id: int | None) -> list[dict[str, Any]]:
    return [
        _with_image(
            {
                "library_image_id": m.library_image_id,
                "rank": m.rank,
                "distance": m.distance,
                "confidence": m.confidence,
                "decision": image.decision,
            },
            "query_image_id",
            image_id,
        )
        for m in image.matches
    ]


def _review_row(review: NewReview, image_id: int | None, now: datetime) -> dict[str, Any]:
    row = {
        "candidate_image_id": review.candidate_image_id,
        "distance": review.distance,
        "confidence": review.confidence,
        "reason": review.reason,
        "status": "pending",
        "created_at": now,
    }
    return _with_image(row, "image_id", image_id)


def _matched_ids(new: NewContent) -> list[int]:
    return sorted({m.library_image_id for image in new.images for m in image.matches})


def _prefixed(prefix: str, row: dict[str, Any]) -> dict[str, Any]:
    return {f"{prefix}_{name}": value for name, value in row.items()}


_REVIEW_ACTIONS = {"confirm": "confirmed", "reject": "rejected"}


@contextmanager
def write_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A write transaction; on SQLite it takes the write lock at BEGIN (no upgrade deadlock).
    The one place both the repository and the console store open their writes."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.execution_options(sqlite_begin="IMMEDIATE")
        with connection.begin():
            yield connection


@contextmanager
def read_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    with engine.connect() as connection, connection.begin():
        yield connection


class Repository:
    """All database access of the service; one short transaction per public method."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self._sqlite = engine.dialect.name == "sqlite"
        # PostgreSQL's two statements of every ingest go straight to the driver (store/direct.py).
        self._direct = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        self._direct_lookup = DirectStatement(_LOOKUP, engine.dialect) if self._direct else None
        self._direct_writes: dict[Shape, DirectStatement] = {}

    # --- plumbing ------------------------------------------------------------------------------

    def _write(self) -> AbstractContextManager[sa.Connection]:
        return write_transaction(self.engine)

    def _read(self) -> AbstractContextManager[sa.Connection]:
        return read_transaction(self.engine)

    @contextmanager
    def _read_once(self) -> Iterator[sa.Connection]:
        """A connection for one read statement: autocommit on PostgreSQL, where a transaction
        around a single statement only adds a BEGIN and a COMMIT round trip; a plain read
        transaction on SQLite (its BEGIN is local)."""
        if self._sqlite:
            with self._read() as connection:
                yield connection
            return
        with self.engine.connect() as connection:
            yield connection.execution_options(isolation_level="AUTOCOMMIT")

    def _lock_library(self, connection: sa.Connection) -> None:
        if not self._sqlite:
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(LIBRARY_LOCK_KEY)))

    @staticmethod
    def _audit(
        connection: sa.Connection,
        *,
        actor: str,
        action: str,
        subject_type: str,
        subject_id: int,
        detail: dict[str, Any],
    ) -> None:
        connection.execute(
            _INSERT_AUDIT,
            {
                "at": utcnow(),
                "actor": actor,
                "action": action,
                "subject_type": subject_type,
                "subject_id": subject_id,
                "detail": detail,
            },
        )

    def ping(self) -> None:
        with self._read() as connection:
            connection.execute(sa.select(1))

    # --- ingest ----------------------------------------------------------------------------------

    def save_content(self, new: NewContent) -> int:
        """Store an ingested upload with all its images in one transaction; returns its id.

        Raises :class:`DuplicateContent` when the same bytes were stored concurrently.
        """
        return self.store_content(new).id

    def store_content(self, new: NewContent) -> SavedContent:
        """``save_content``, returning every id it made and the refs of the matched library
        images: on PostgreSQL an ordinary upload (not into the library, at most
        ``one_statement.MAX_IMAGES`` images) in one statement, otherwise one transaction of one
        statement per row kind (the ingest path's whole write). Both write the same rows from
        the same ``_*_row`` values.

        Raises :class:`DuplicateContent` when the same bytes were stored concurrently.
        """
        try:
            if not self._sqlite and not new.library and len(new.images) <= MAX_IMAGES:
                return self._store_in_one_statement(new)
            with self._write() as connection:
                now = utcnow()
                content_id = int(
                    connection.execute(_INSERT_CONTENT, _content_row(new, now)).scalar_one()
                )
                saved = [
                    self._insert_image(connection, content_id, image, now) for image in new.images
                ]
                connection.execute(_INSERT_AUDIT, _ingest_audit_row(new, content_id, now))
                if new.library:
                    self._add_members(connection, [image.id for image in saved], new.actor)
                refs = self._refs(connection, _matched_ids(new))
        except sa_exc.IntegrityError as error:
            if self.content_id_by_sha256(new.sha256) is not None:
                raise DuplicateContent(new.sha256) from error
            raise
        return SavedContent(content_id, saved, refs)

    def _store_in_one_statement(self, new: NewContent) -> SavedContent:
        """The write as ``one_statement``'s single statement, in autocommit (it is atomic)."""
        now = utcnow()
        matched = _matched_ids(new)
        shape = Shape(
            tuple(
                ImageShape(
                    image.thumbnail is not None, len(image.matches), image.review is not None
                )
                for image in new.images
            ),
            len(matched),
        )
        params: dict[str, Any] = _prefixed("c", _content_row(new, now))
        params.update(_prefixed("a", _ingest_audit_row(new, None, now)))
        for i, image in enumerate(new.images):
            params.update(_prefixed(f"i{i}", _image_row(image, None, now)))
            params.update(_prefixed(f"h{i}", _hash_row(image, None)))
            if image.thumbnail is not None:
                params.update(_prefixed(f"t{i}", _thumbnail_row(image.thumbnail, None)))
            for k, match_row in enumerate(_match_rows(image, None)):
                params.update(_prefixed(f"m{i}_{k}", match_row))
            if image.review is not None:
                params.update(_prefixed(f"r{i}", _review_row(image.review, None, now)))
        params.update({f"ref_{j}": image_id for j, image_id in enumerate(matched)})
        row = self._one_row(shape, params)
        saved = [
            SavedImage(
                int(row[f"image_{i}"]),
                None if row[f"review_{i}"] is None else int(row[f"review_{i}"]),
            )
            for i in range(len(new.images))
        ]
        refs = {
            image_id: ImageRef(row[f"ref_source_{j}"], row[f"ref_locator_{j}"])
            for j, image_id in enumerate(matched)
            if row[f"ref_locator_{j}"] is not None
        }
        return SavedContent(int(row["content_id"]), saved, refs)

    def _one_row(self, shape: Shape, params: dict[str, Any]) -> Mapping[Any, Any]:
        """The one statement's row: straight through the driver where it can (psycopg), else
        through SQLAlchemy in autocommit; the same SQL, parameters and errors either way."""
        if not self._direct:
            with self._read_once() as connection:
                return connection.execute(statement_for(shape), params).one()._mapping
        direct = self._direct_writes.get(shape)
        if direct is None:
            if len(self._direct_writes) >= SHAPES_KEPT:
                self._direct_writes.clear()  # rare shapes: compile again rather than grow
            direct = DirectStatement(statement_for(shape), self.engine.dialect)
            self._direct_writes[shape] = direct
        return direct.first_row(self.engine, params)

    def _insert_image(
        self, connection: sa.Connection, content_id: int, image: NewImage, now: datetime
    ) -> SavedImage:
        image_id = int(
            connection.execute(_INSERT_IMAGE, _image_row(image, content_id, now)).scalar_one()
        )
        connection.execute(_INSERT_HASH, _hash_row(image, image_id))
        if image.matches:
            connection.execute(_INSERT_MATCHES, _match_rows(image, image_id))
        if image.thumbnail is not None:
            connection.execute(_INSERT_THUMBNAIL, _thumbnail_row(image.thumbnail, image_id))
        review_id = None
        if image.review is not None:
            review_id = int(
                connection.execute(
                    _INSERT_REVIEW, _review_row(image.review, image_id, now)
                ).scalar_one()
            )
        return SavedImage(image_id, review_id)

    def _add_members(self, connection: sa.Connection, image_ids: Iterable[int], actor: str) -> int:
        """Insert library rows last in the transaction, under the ordering lock."""
        ids = sorted(set(image_ids))
        if not ids:
            return 0
        present = set(
            connection.execute(
                sa.select(library.c.image_id).where(library.c.image_id.in_(ids))
            ).scalars()
        )
        missing = [i for i in ids if i not in present]
        if not missing:
            return 0
        for image_id in missing:
            self._audit(
                connection,
                actor=actor,
                action="library_add",
                subject_type="image",
                subject_id=image_id,
                detail={},
            )
        self._lock_library(connection)
        now = utcnow()
        connection.execute(_INSERT_MEMBERS, [{"image_id": i, "added_at": now} for i in missing])
        return len(missing)

    def add_content_to_library(self, content_id: int, actor: str = "api") -> int:
        """Make every image of a stored upload a library image; returns how many were added."""
        with self._write() as connection:
            image_ids = connection.execute(
                sa.select(images.c.id).where(images.c.content_id == content_id)
            ).scalars()
            return self._add_members(connection, list(image_ids), actor)

    # --- reads -----------------------------------------------------------------------------------

    def ingest_lookup(self, sha256: str) -> IngestLookup:
        """One statement, in autocommit on PostgreSQL (no BEGIN/COMMIT round trips for a single
        read): whether these bytes are stored, and the newest library membership id."""
        if self._direct_lookup is not None:
            row: Mapping[Any, Any] = self._direct_lookup.first_row(self.engine, {"sha256": sha256})
        else:
            with self._read_once() as connection:
                row = connection.execute(_LOOKUP, {"sha256": sha256}).one()._mapping
        found = None if row["content_id"] is None else int(row["content_id"])
        return IngestLookup(found, int(row["newest"] or 0))

    def content_id_by_sha256(self, sha256: str) -> int | None:
        with self._read() as connection:
            found = connection.execute(
                sa.select(contents.c.id).where(contents.c.sha256 == sha256)
            ).scalar_one_or_none()
        return None if found is None else int(found)

    def _image_query(self, algorithm: str) -> sa.Select[Any]:
        return (
            sa.select(
                images,
                contents.c.sha256,
                contents.c.source,
                hashes.c.algorithm,
                hashes.c.bits,
                hashes.c.value,
                hashes.c.wide,
                hashes.c.low_information,
                library.c.id.label("member_id"),
                reviews.c.id.label("review_id"),
            )
            .join(contents, contents.c.id == images.c.content_id)
            .outerjoin(
                hashes, (hashes.c.image_id == images.c.id) & (hashes.c.algorithm == algorithm)
            )
            .outerjoin(library, library.c.image_id == images.c.id)
            .outerjoin(reviews, reviews.c.image_id == images.c.id)
        )

    @staticmethod
    def _image_record(row: sa.Row[Any], found: list[MatchRecord] | None = None) -> ImageRecord:
        return ImageRecord(
            id=row.id,
            content_id=row.content_id,
            sha256=row.sha256,
            source=row.source,
            locator=row.locator,
            kind=row.kind,
            width=row.width,
            height=row.height,
            hash=_hash_from_row(row.algorithm, row.bits, row.value, row.wide, row.low_information),
            library=row.member_id is not None,
            decision=row.decision,
            confidence=row.confidence,
            created_at=row.created_at,
            matches=found or [],
            review_id=row.review_id,
        )

    def get_image(self, image_id: int, algorithm: str) -> ImageRecord:
        with self._read() as connection:
            row = connection.execute(
                self._image_query(algorithm).where(images.c.id == image_id)
            ).one_or_none()
        if row is None:
            raise NotFound(f"no image with id {image_id}", detail={"image_id": image_id})
        return self._image_record(row)

    def get_content(self, content_id: int, algorithm: str) -> ContentRecord:
        """An upload with its images, each with its stored matches (for duplicate reports)."""
        with self._read() as connection:
            head = connection.execute(
                sa.select(contents).where(contents.c.id == content_id)
            ).one_or_none()
            if head is None:
                raise NotFound(f"no content with id {content_id}")
            rows = connection.execute(
                self._image_query(algorithm)
                .where(images.c.content_id == content_id)
                .order_by(images.c.id)
            ).all()
            by_image = self._stored_matches(connection, [r.id for r in rows], algorithm)
        return ContentRecord(
            id=head.id,
            sha256=head.sha256,
            input_kind=head.input_kind,
            source=head.source,
            failures=list(head.failures),
            images=[self._image_record(r, by_image.get(r.id)) for r in rows],
        )

    def stored_matches(self, image_id: int, algorithm: str) -> list[MatchRecord]:
        """The library images stored as an image's nearest candidates, nearest first."""
        with self._read() as connection:
            return self._stored_matches(connection, [image_id], algorithm).get(image_id, [])

    def _stored_matches(
        self, connection: sa.Connection, image_ids: list[int], algorithm: str
    ) -> dict[int, list[MatchRecord]]:
        if not image_ids:
            return {}
        rows = connection.execute(
            sa.select(
                matches.c.query_image_id,
                matches.c.library_image_id,
                matches.c.distance,
                matches.c.confidence,
                images.c.locator,
                contents.c.source,
                hashes.c.algorithm,
                hashes.c.bits,
                hashes.c.value,
                hashes.c.wide,
                hashes.c.low_information,
            )
            .join(images, images.c.id == matches.c.library_image_id)
            .join(contents, contents.c.id == images.c.content_id)
            .outerjoin(
                hashes, (hashes.c.image_id == images.c.id) & (hashes.c.algorithm == algorithm)
            )
            .where(matches.c.query_image_id.in_(image_ids))
            .order_by(matches.c.query_image_id, matches.c.rank)
        ).all()
        found: dict[int, list[MatchRecord]] = {}
        for r in rows:
            found.setdefault(r.query_image_id, []).append(
                MatchRecord(
                    image_id=r.library_image_id,
                    distance=r.distance,
                    confidence=r.confidence,
                    hash=_hash_from_row(r.algorithm, r.bits, r.value, r.wide, r.low_information),
                    source=r.source,
                    locator=r.locator,
                )
            )
        return found

    def any_hash(self, image_id: int) -> StoredHash:
        """Some stored hash of an image (for images hashed under a since-changed algorithm)."""
        with self._read() as connection:
            row = connection.execute(
                sa.select(hashes)
                .where(hashes.c.image_id == image_id)
                .order_by(hashes.c.id)
                .limit(1)
            ).one_or_none()
        found = (
            None
            if row is None
            else _hash_from_row(row.algorithm, row.bits, row.value, row.wide, row.low_information)
        )
        if found is None:
            raise NotFound(f"image {image_id} has no stored hash", detail={"image_id": image_id})
        return found

    def image_refs(self, image_ids: Sequence[int]) -> dict[int, ImageRef]:
        """Source and locator of some images (search results), in one query."""
        if not image_ids:
            return {}
        with self._read() as connection:
            return self._refs(connection, image_ids)

    @staticmethod
    def _refs(connection: sa.Connection, image_ids: Sequence[int]) -> dict[int, ImageRef]:
        if not image_ids:
            return {}
        rows = connection.execute(
            sa.select(images.c.id, images.c.locator, contents.c.source)
            .join(contents, contents.c.id == images.c.content_id)
            .where(images.c.id.in_(list(image_ids)))
        ).all()
        return {r.id: ImageRef(r.source, r.locator) for r in rows}

    def library_since(self, algorithm: str, bits: int, after: int, limit: int) -> LibraryBatch:
        """Library rows with membership id > ``after``, in id order, as index input.

        Members without a hash of this algorithm still advance the watermark. The newest id is
        read first, so a poll with nothing new costs one statement.
        """
        with self._read() as connection:
            newest = int(connection.execute(_NEWEST_MEMBER).scalar_one() or 0)
            if newest <= after:
                return LibraryBatch(np.empty(0, np.int64), np.empty(0, np.uint64), after, newest)
            rows = connection.execute(
                sa.select(library.c.id, library.c.image_id, hashes.c.value, hashes.c.wide)
                .outerjoin(
                    hashes,
                    (hashes.c.image_id == library.c.image_id) & (hashes.c.algorithm == algorithm),
                )
                .where(library.c.id > after)
                .order_by(library.c.id)
                .limit(limit)
            ).all()
        if not rows:
            return LibraryBatch(np.empty(0, np.int64), np.empty(0, np.uint64), after, newest)
        last = int(rows[-1][0])
        if bits == 64:
            kept = [(r[1], r[2]) for r in rows if r[2] is not None]
            ids = np.fromiter((k[0] for k in kept), dtype=np.int64, count=len(kept))
            signed = np.fromiter((k[1] for k in kept), dtype=np.int64, count=len(kept))
            return LibraryBatch(ids, signed.view(np.uint64), last, newest)
        words = word_count(bits)
        wide_rows = [(r[1], r[3]) for r in rows if r[3] is not None]
        ids = np.fromiter((k[0] for k in wide_rows), dtype=np.int64, count=len(wide_rows))
        raw = b"".join(k[1] for k in wide_rows)
        matrix = np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, words)
        return LibraryBatch(ids, matrix, last, newest)

    def library_size(self) -> int:
        with self._read() as connection:
            return int(
                connection.execute(sa.select(sa.func.count()).select_from(library)).scalar_one()
            )

    # --- review queue ----------------------------------------------------------------------------

    @staticmethod
    def _review_record(row: sa.Row[Any]) -> ReviewRecord:
        return ReviewRecord(
            id=row.id,
            image_id=row.image_id,
            candidate_image_id=row.candidate_image_id,
            distance=row.distance,
            confidence=row.confidence,
            reason=row.reason,
            status=row.status,
            reviewer=row.reviewer,
            created_at=row.created_at,
            resolved_at=row.resolved_at,
        )

    def review_items(self, status: str, limit: int, offset: int) -> list[ReviewRecord]:
        with self._read() as connection:
            rows = connection.execute(
                sa.select(reviews)
                .where(reviews.c.status == status)
                .order_by(reviews.c.id)
                .limit(limit)
                .offset(offset)
            ).all()
        return [self._review_record(r) for r in rows]

    def get_review(self, item_id: int) -> ReviewRecord:
        with self._read() as connection:
            row = connection.execute(
                sa.select(reviews).where(reviews.c.id == item_id)
            ).one_or_none()
        if row is None:
            raise NotFound(f"no review item with id {item_id}", detail={"review_id": item_id})
        return self._review_record(row)

    def count_reviews(self, status: str = "pending") -> int:
        with self._read() as connection:
            return int(
                connection.execute(
                    sa.select(sa.func.count())
                    .select_from(reviews)
                    .where(reviews.c.status == status)
                ).scalar_one()
            )

    def resolve_review(
        self,
        item_id: int,
        action: str,
        reviewer: str,
        *,
        via: str = "api",
        claimant: str | None = None,
        now: datetime | None = None,
    ) -> ReviewRecord:
        """pending → confirmed/rejected, once; a second resolution is a Conflict.

        The audit event says ``via`` which door the decision came in (``api``, ``console``,
        ``bulk``, ``import``). With ``claimant`` (the console) an item another reviewer holds a
        live claim on is a Conflict too; any claim on the item ends with its decision.
        """
        status = _REVIEW_ACTIONS[action]
        with self._write() as connection:
            if claimant is not None:
                holder = connection.execute(
                    sa.select(claims.c.reviewer).where(
                        (claims.c.review_id == item_id)
                        & (claims.c.expires_at > (now or utcnow()))
                        & (claims.c.reviewer != claimant)
                    )
                ).scalar_one_or_none()
                if holder is not None:
                    raise Conflict(
                        f"review item {item_id} is claimed by {holder}",
                        detail={"review_id": item_id, "claimed_by": holder},
                    )
            updated = connection.execute(
                sa.update(reviews)
                .where((reviews.c.id == item_id) & (reviews.c.status == "pending"))
                .values(status=status, reviewer=reviewer, resolved_at=utcnow())
            ).rowcount
            if updated != 1:
                exists = connection.execute(
                    sa.select(reviews.c.status).where(reviews.c.id == item_id)
                ).scalar_one_or_none()
                if exists is None:
                    raise NotFound(
                        f"no review item with id {item_id}", detail={"review_id": item_id}
                    )
                raise Conflict(
                    f"review item {item_id} is already {exists}",
                    detail={"review_id": item_id, "status": exists},
                )
            self._audit(
                connection,
                actor=reviewer,
                action=f"review_{action}",
                subject_type="review_item",
                subject_id=item_id,
                detail={"status": status, "via": via},
            )
            connection.execute(sa.delete(claims).where(claims.c.review_id == item_id))
        return self.get_review(item_id)

    def audit_events(self, subject_type: str, subject_id: int) -> list[dict[str, Any]]:
        with self._read() as connection:
            rows = connection.execute(
                sa.select(audit)
                .where((audit.c.subject_type == subject_type) & (audit.c.subject_id == subject_id))
                .order_by(audit.c.id)
            ).all()
        return [dict(r._mapping) for r in rows]
