"""Shapes the HTTP API adds around the service's answers (``dhash_service.schemas``).

Lists are wrapped in objects so fields can be added later without breaking clients. Kept free of
FastAPI so the HTTP client (``dhash_service.client``) can share them cheaply.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from dhash_service.review import MAX_REVIEWER_LENGTH
from dhash_service.schemas import MatchOut, ReviewItemOut


class Health(BaseModel):
    status: str
    version: str
    pid: int


class SearchOut(BaseModel):
    matches: list[MatchOut]


class ReviewListOut(BaseModel):
    items: list[ReviewItemOut]


class ReviewDecision(BaseModel):
    action: Literal["confirm", "reject"]
    reviewer: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_REVIEWER_LENGTH,
        description="Who decided; defaults to the fingerprint of the token used.",
    )


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer."""

    error: str
    message: str
    detail: dict[str, Any] | None = None
    request_id: str | None = None
