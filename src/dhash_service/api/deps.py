"""Route dependencies: the app's shared objects (held on ``app.state``) and the token check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from anyio import CapacityLimiter
from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from dhash_service.api.auth import Principal, TokenAuth, bearer_scheme
from dhash_service.api.lifecycle import Lifecycle
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
    # Bounds how many uploads one worker extracts at once: decoding is CPU and memory bound,
    # so more at once only slows each down and multiplies peak memory.
    extraction_limiter: CapacityLimiter


def app_context(source: HTTPConnection | Starlette) -> AppContext:
    app = source.app if isinstance(source, HTTPConnection) else source
    ctx = app.state.dhash
    assert isinstance(ctx, AppContext)
    return ctx


def require_token(
    conn: HTTPConnection,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer_scheme),
) -> Principal:
    """Protected routes depend on this; it raises ``AuthError`` (401) before the body is read."""
    return app_context(conn).auth.authenticate(credentials)
