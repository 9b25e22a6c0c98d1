"""The whole write of an ordinary ingest as one PostgreSQL statement (data-modifying CTEs).

An ingest writes a content row, per image an image, hash and (usually) thumbnail row, maybe
matches and a review item, and an audit row. As separate statements in a transaction that is
BEGIN, six INSERTs and COMMIT: eight round trips, each paying SQLAlchemy's and the driver's
per-statement Python (~0.3 ms a statement in a profile of the worker). As one statement, run in
autocommit, it is one round trip and atomic all the same: a statement commits whole or not at
all, and every foreign key is checked at its end, where the rows it references were inserted by
the same statement. The matched library images' sources and locators are read by the same
statement (its snapshot, like the transaction's read).

Statements depend on the upload's shape (images, thumbnails, matches, reviews, matched library
images), so they are built per shape and kept (``statement_for``): a prebuilt statement has its
SQLAlchemy cache key memoized and its SQL compiled once. Library additions are not written here:
they need the advisory lock that orders membership ids (repository docstring), so an ingest into
the library takes the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

import sqlalchemy as sa

from dhash_service.store.models import (
    AuditEvent,
    Content,
    Image,
    ImageHashRow,
    Match,
    ReviewItem,
    Thumbnail,
)

contents = cast(sa.Table, Content.__table__)
images = cast(sa.Table, Image.__table__)
hashes = cast(sa.Table, ImageHashRow.__table__)
matches = cast(sa.Table, Match.__table__)
reviews = cast(sa.Table, ReviewItem.__table__)
audit = cast(sa.Table, AuditEvent.__table__)
thumbnails = cast(sa.Table, Thumbnail.__table__)

# Past this many images an upload (a document, an archive) takes the transaction: its statement
# would be long and rarely reused, and the per-statement cost matters less beside its decoding.
MAX_IMAGES = 4
# Shapes kept: single images with 0-10 matches, with or without a thumbnail and a review, fit.
SHAPES_KEPT = 128


@dataclass(frozen=True)
class ImageShape:
    thumbnail: bool
    matches: int
    review: bool


@dataclass(frozen=True)
class Shape:
    """What a statement has room for: per image its parts, and the matched library images."""

    images: tuple[ImageShape, ...]
    refs: int


def _columns(table: sa.Table, prefix: str, *, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every column but the id (and ``skip``) bound to a parameter ``<prefix>_<column>``."""
    return {
        column.name: sa.bindparam(f"{prefix}_{column.name}", type_=column.type)
        for column in table.columns
        if column.name not in ("id", *skip)
    }


def _id_of(cte: sa.CTE) -> sa.ScalarSelect[Any]:
    return sa.select(cte.c.id).scalar_subquery()


@lru_cache(maxsize=SHAPES_KEPT)
def statement_for(shape: Shape) -> sa.Select[Any]:
    """The one statement for ``shape``. Its row: ``content_id``, ``image_<i>``, ``review_<i>``
    (NULL without a review), ``ref_locator_<j>`` and ``ref_source_<j>`` for the library image
    bound to ``ref_<j>``. Parameters are named by ``Parameters``' methods."""
    content = sa.insert(contents).values(_columns(contents, "c")).returning(contents.c.id)
    content_cte = content.cte("new_content")
    ctes: list[sa.CTE] = [content_cte]
    columns: list[Any] = [_id_of(content_cte).label("content_id")]
    for i, part in enumerate(shape.images):
        image = sa.insert(images).values(
            {**_columns(images, f"i{i}", skip=("content_id",)), "content_id": _id_of(content_cte)}
        )
        image_cte = image.returning(images.c.id).cte(f"new_image_{i}")
        image_id = _id_of(image_cte)
        ctes.append(image_cte)
        columns.append(image_id.label(f"image_{i}"))
        hash_row = sa.insert(hashes).values(
            {**_columns(hashes, f"h{i}", skip=("image_id",)), "image_id": image_id}
        )
        ctes.append(hash_row.cte(f"new_hash_{i}"))
        if part.thumbnail:
            thumb = sa.insert(thumbnails).values(
                {**_columns(thumbnails, f"t{i}", skip=("image_id",)), "image_id": image_id}
            )
            ctes.append(thumb.cte(f"new_thumbnail_{i}"))
        if part.matches:
            rows = [
                {
                    **_columns(matches, f"m{i}_{k}", skip=("query_image_id",)),
                    "query_image_id": image_id,
                }
                for k in range(part.matches)
            ]
            ctes.append(sa.insert(matches).values(rows).cte(f"new_matches_{i}"))
        if part.review:
            review = sa.insert(reviews).values(
                {
                    **_columns(reviews, f"r{i}", skip=("image_id", "reviewer", "resolved_at")),
                    "image_id": image_id,
                }
            )
            review_cte = review.returning(reviews.c.id).cte(f"new_review_{i}")
            ctes.append(review_cte)
            columns.append(_id_of(review_cte).label(f"review_{i}"))
        else:
            columns.append(sa.null().label(f"review_{i}"))
    event = sa.insert(audit).values(
        {**_columns(audit, "a", skip=("subject_id",)), "subject_id": _id_of(content_cte)}
    )
    ctes.append(event.cte("new_audit"))
    for j in range(shape.refs):
        ref = sa.bindparam(f"ref_{j}", type_=images.c.id.type)
        columns.append(
            sa.select(images.c.locator)
            .where(images.c.id == ref)
            .scalar_subquery()
            .label(f"ref_locator_{j}")
        )
        columns.append(
            sa.select(contents.c.source)
            .join(images, images.c.content_id == contents.c.id)
            .where(images.c.id == ref)
            .scalar_subquery()
            .label(f"ref_source_{j}")
        )
    return sa.select(*columns).add_cte(*ctes)
