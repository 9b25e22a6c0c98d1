"""Route dependencies: the app's shared objects (held on ``app.state``) and the token check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from dhash_service.api.admission import Admission
from dhash_service.api.auth import READ, REVIEW, WRITE, Principal, TokenAuth, bearer_scheme
from dhash_service.api.lifecycle import Lifecycle
from dhash_service.api.reviewers import ReviewerAccounts
from dhash_service.config import Settings
from dhash_service.metrics import ServiceMetrics

if TYPE_CHECKING:
    from dhash_service.service import DhashService


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    service: DhashService
    metrics: ServiceMetrics
    lifecycle: Lifecycle
    auth: TokenAuth
    # Bounds how many uploads one worker extracts at once, images and documents in separate
    # lanes: decoding is CPU and memory bound, so more at once only slows each down and
    # multiplies peak memory (``dhash_service.api.admission``).
    admission: Admission
    # The review console's accounts (``DHASH_REVIEWER_TOKENS``); none: nobody can log in.
    reviewers: ReviewerAccounts = field(default_factory=lambda: ReviewerAccounts(()))


def app_context(source: HTTPConnection | Starlette) -> AppContext:
    app = source.app if isinstance(source, HTTPConnection) else source
    ctx = app.state.dhash
    assert isinstance(ctx, AppContext)
    return ctx


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that raises ``AuthError`` (401) or ``Forbidden`` (403) before the body is
    read unless the bearer token has ``scope``.

    ``async`` although it awaits nothing: FastAPI runs a plain ``def`` dependency in the thread
    pool, and that hand-off (twice per upload with the extraction's) cost about 1 ms of worker
    CPU per request for a check that takes microseconds (bench/RESULTS.md)."""

    async def dependency(
        conn: HTTPConnection,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
    ) -> Principal:
        return app_context(conn).auth.authenticate(credentials, scope)

    return dependency


require_read = require_scope(READ)
require_write = require_scope(WRITE)
require_review = require_scope(REVIEW)
require_token = require_write  # the scope ingesting needs (kept for existing imports)
