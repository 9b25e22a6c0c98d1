"""The JSON API under ``/v1``: thin calls into ``DhashService``, no logic of its own.

Blocking work (decoding, hashing, the store) runs in the thread pool: upload routes stream the
body on the event loop and hand the bytes to a thread; the other routes are plain ``def``.
Extraction outcomes are counted here, because only the HTTP layer sees every request.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Annotated, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Body, Depends, Path, Query, Request

from dhash_service.api.auth import Principal
from dhash_service.api.deps import AppContext, app_context, require_token
from dhash_service.api.errors import error_responses
from dhash_service.api.models import ReviewDecision, ReviewListOut, SearchOut
from dhash_service.api.uploads import UPLOAD_REQUEST_BODY, read_upload
from dhash_service.digest import DigestResult
from dhash_service.errors import (
    AuthError,
    Conflict,
    CorruptInput,
    InputError,
    InputTooLarge,
    NotFound,
    Unavailable,
    UnsupportedFormat,
)
from dhash_service.extraction.sniff import sniff
from dhash_service.hashing import ALGORITHMS
from dhash_service.matching import MAX_RADIUS
from dhash_service.review import MAX_PAGE
from dhash_service.schemas import (
    HashReport,
    ImageOut,
    IngestReport,
    ReviewItemOut,
    ReviewStatus,
)
from dhash_service.service import MAX_SEARCH_LIMIT

router = APIRouter(prefix="/v1", tags=["v1"])

MAX_ID = 2**63 - 1  # the store's BIGINT; larger ids cannot exist
HEX_HASH = r"^[0-9a-fA-F]{16}([0-9a-fA-F]{48})?$"  # 64-bit or 256-bit
ALGORITHM_NAME = "^(" + "|".join(re.escape(name) for name in ALGORITHMS) + ")$"

Report = TypeVar("Report")

UPLOAD_ERRORS = error_responses(InputError, InputTooLarge, UnsupportedFormat, CorruptInput)


def _counted(
    ctx: AppContext, data: bytes, run: Callable[[], tuple[Report, DigestResult]]
) -> Report:
    """Run an extraction and count it: per image on success, once for a refused input."""
    try:
        report, digest = run()
    except InputError:
        ctx.metrics.record_input_failure(sniff(data).kind)
        raise
    ctx.metrics.record_digest(digest)
    return report


async def _extract(
    ctx: AppContext, data: bytes, run: Callable[[], tuple[Report, DigestResult]]
) -> Report:
    """Run an extraction in the thread pool, at most ``extraction_limiter`` of them at once."""
    return await anyio.to_thread.run_sync(
        partial(_counted, ctx, data, run), limiter=ctx.extraction_limiter
    )


@router.post(
    "/images",
    status_code=201,
    response_model=IngestReport,
    summary="Ingest an upload: extract, hash, match, decide and store every image in it",
    openapi_extra=UPLOAD_REQUEST_BODY,
    responses=error_responses(AuthError, Unavailable) | UPLOAD_ERRORS,
)
async def ingest_images(
    request: Request,
    principal: Annotated[Principal, Depends(require_token)],
    library: Annotated[
        bool, Query(description="Also add the images to the reference library.")
    ] = False,
    source: Annotated[str | None, Query(max_length=500, description="Where it came from.")] = None,
    filename: Annotated[
        str | None, Query(max_length=255, description="Overrides the part's.")
    ] = None,
) -> IngestReport:
    ctx = app_context(request)
    upload = await read_upload(request, ctx.settings.max_upload_bytes)
    name = filename or upload.filename

    def run() -> tuple[IngestReport, DigestResult]:
        return ctx.service.ingest(
            upload.data, filename=name, library=library, source=source, actor=principal.name
        )

    return await _extract(ctx, upload.data, run)


@router.post(
    "/hash",
    response_model=HashReport,
    summary="Hash every image in an upload; nothing is stored",
    openapi_extra=UPLOAD_REQUEST_BODY,
    responses=error_responses(Unavailable) | UPLOAD_ERRORS,
)
async def hash_upload(
    request: Request,
    filename: Annotated[
        str | None, Query(max_length=255, description="Overrides the part's.")
    ] = None,
) -> HashReport:
    ctx = app_context(request)
    upload = await read_upload(request, ctx.settings.max_upload_bytes)
    name = filename or upload.filename

    def run() -> tuple[HashReport, DigestResult]:
        return ctx.service.hash_only(upload.data, filename=name)

    return await _extract(ctx, upload.data, run)


@router.get(
    "/images/{image_id}",
    response_model=ImageOut,
    summary="One stored image",
    responses=error_responses(NotFound, InputError, Unavailable),
)
def get_image(request: Request, image_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> ImageOut:
    return app_context(request).service.get_image(image_id)


@router.get(
    "/search",
    response_model=SearchOut,
    summary="Library images within a Hamming radius of a hash, nearest first",
    responses=error_responses(InputError, Unavailable),
)
def search(
    request: Request,
    hash: Annotated[str, Query(pattern=HEX_HASH, description="Hex hash, as returned.")],
    radius: Annotated[int, Query(ge=0, le=MAX_RADIUS)] = 4,
    algorithm: Annotated[str | None, Query(pattern=ALGORITHM_NAME)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_SEARCH_LIMIT)] = 100,
) -> SearchOut:
    service = app_context(request).service
    return SearchOut(matches=service.search(hash, radius, algorithm, limit))


@router.get(
    "/review",
    response_model=ReviewListOut,
    summary="Low-confidence decisions waiting for (or resolved by) a person",
    responses=error_responses(AuthError, InputError, Unavailable),
)
def review_items(
    request: Request,
    _principal: Annotated[Principal, Depends(require_token)],
    status: ReviewStatus = "pending",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> ReviewListOut:
    service = app_context(request).service
    return ReviewListOut(items=service.review_items(status, limit, offset))


@router.post(
    "/review/{item_id}",
    response_model=ReviewItemOut,
    summary="Confirm (same picture) or reject (not the same) a review item, once",
    responses=error_responses(AuthError, NotFound, Conflict, InputError, Unavailable),
)
def resolve_review(
    request: Request,
    principal: Annotated[Principal, Depends(require_token)],
    item_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    decision: Annotated[ReviewDecision, Body()],
) -> ReviewItemOut:
    service = app_context(request).service
    return service.resolve_review(item_id, decision.action, decision.reviewer or principal.name)
