"""The service's answers, as pydantic models: the facade returns them, the API serialises them.

Hashes are lowercase hex (``ImageHash.hex()``), the form imagehash prints and ``search`` takes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

Decision = Literal["match", "review", "new"]
ReviewStatus = Literal["pending", "confirmed", "rejected"]
ReviewReason = Literal["review_band", "ambiguous", "low_information"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class MatchOut(_Out):
    """A library image near the query: its id, Hamming distance and where it came from."""

    image_id: int
    distance: int
    hash: str
    source: str | None
    locator: str | None


class HashedItemOut(_Out):
    """One image extracted from the input and its hash."""

    locator: str
    kind: str
    width: int
    height: int
    hash: str
    algorithm: str
    low_information: bool


class ItemOut(HashedItemOut):
    """A stored image with the matching decision made for it (see docs/matching.md)."""

    image_id: int
    decision: Decision
    confidence: float
    matches: list[MatchOut]
    review_id: int | None


class FailureOut(_Out):
    """An item that could not be extracted or hashed; the rest of the input still counts."""

    locator: str
    error: str
    message: str


class IngestReport(_Out):
    """What ingesting one upload did; ``duplicate`` means these bytes were stored before."""

    sha256: str
    input_kind: str
    library: bool
    duplicate: bool
    items: list[ItemOut]
    failures: list[FailureOut]


class HashReport(_Out):
    """Hashes of an upload, nothing stored."""

    input_kind: str
    items: list[HashedItemOut]
    failures: list[FailureOut]


class ImageOut(_Out):
    """One stored image."""

    id: int
    sha256: str
    source: str | None
    locator: str
    kind: str
    width: int
    height: int
    algorithm: str
    hash: str
    low_information: bool
    library: bool
    decision: Decision
    confidence: float
    created_at: datetime


class ReviewItemOut(_Out):
    """A low-confidence decision waiting for (or resolved by) a person."""

    id: int
    image_id: int
    candidate_image_id: int | None
    distance: int | None
    confidence: float
    reason: ReviewReason
    status: ReviewStatus
    reviewer: str | None
    created_at: datetime
    resolved_at: datetime | None


class Readiness(_Out):
    """``ready`` only when every check says ``ok``; the API answers 503 otherwise."""

    ready: bool
    checks: dict[str, str]
