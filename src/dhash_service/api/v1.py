"""The JSON API under ``/v1``: thin calls into ``DhashService``, no logic of its own.

Blocking work (decoding, hashing, the store) runs in the thread pool: upload routes stream the
body on the event loop and hand the bytes to a thread; the other routes are plain ``def``.
Extraction outcomes are counted here, because only the HTTP layer sees every request.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from functools import partial
from typing import Annotated, TypeVar

import anyio.to_thread
from fastapi import APIRouter, Body, Depends, Path, Query, Request

from dhash_service import memory
from dhash_service.api.auth import Principal
from dhash_service.api.deps import (
    AppContext,
    app_context,
    require_read,
    require_review,
    require_write,
)
from dhash_service.api.errors import error_responses
from dhash_service.api.models import ReviewDecision, ReviewListOut, SearchOut
from dhash_service.api.uploads import UPLOAD_REQUEST_BODY, read_upload
from dhash_service.digest import DigestResult
from dhash_service.errors import (
    AuthError,
    ClientDisconnected,
    Conflict,
    CorruptInput,
    Forbidden,
    InputError,
    InputTooLarge,
    NotFound,
    Overloaded,
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

UPLOAD_ERRORS = error_responses(
    InputError, InputTooLarge, UnsupportedFormat, CorruptInput, AuthError, Forbidden, Overloaded
)


def _counted(
    ctx: AppContext, data: bytes, run: Callable[[], tuple[Report, DigestResult]]
) -> Report:
    """Run an extraction and count it: per image on success, once for a refused input; give
    the memory of a large one back to the system afterwards, off the request's path."""
    pixels = 0
    try:
        report, digest = run()
        pixels = sum(item.width * item.height for item in digest.items)
    except InputError:
        ctx.metrics.record_input_failure(sniff(data).kind)
        raise
    finally:
        if pixels >= memory.TRIM_AFTER_PIXELS or len(data) >= memory.TRIM_AFTER_BYTES:
            threading.Thread(target=memory.trim, name="dhash-malloc-trim", daemon=True).start()
    ctx.metrics.record_digest(digest)
    return report


async def _watch_disconnect(request: Request, cancelled: threading.Event) -> None:
    """Set ``cancelled`` when the client goes away (the body is read: the next message the
    server can send is ``http.disconnect``), so the extraction stops at its next check."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancelled.set()
            return


def _retrieved(task: asyncio.Task[None]) -> None:
    """Take a finished watcher's outcome, so an error in it is never reported as lost."""
    if not task.cancelled():
        task.exception()


def _client_key(request: Request, principal: Principal | None) -> str:
    if principal is not None:
        return principal.name
    return (request.client.host if request.client else None) or "unknown"


async def _extract(
    ctx: AppContext,
    request: Request,
    principal: Principal | None,
    data: bytes,
    run: Callable[[threading.Event], tuple[Report, DigestResult]],
) -> Report:
    """Run an extraction in the thread pool once admitted (``admission``), abandoned when the
    client disconnects."""
    document = ctx.service.isolates(data)
    client = _client_key(request, principal)
    async with ctx.admission.admit(document=document, client=client) as cancelled:
        # The watcher is a plain task, not an anyio task group: the same watch, ~0.2 ms less of
        # the event loop per upload. The work stays on anyio's threads (which reuse the thread
        # that ran last): the loop's executor measured +1.5 ms of worker CPU per 1920x1080
        # upload (bench/RESULTS.md).
        watcher = asyncio.get_running_loop().create_task(_watch_disconnect(request, cancelled))
        watcher.add_done_callback(_retrieved)
        try:
            return await anyio.to_thread.run_sync(
                partial(_counted, ctx, data, partial(run, cancelled))
            )
        except ClientDisconnected:
            if ctx.admission.stopping:
                raise Unavailable("this worker is shutting down; retry on another") from None
            raise
        finally:
            watcher.cancel()


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
    principal: Annotated[Principal, Depends(require_write)],
    library: Annotated[
        bool, Query(description="Also add the images to the reference library.")
    ] = False,
    source: Annotated[str | None, Query(max_length=500, description="Where it came from.")] = None,
    filename: Annotated[
        str | None, Query(max_length=255, description="Overrides the part's.")
    ] = None,
) -> IngestReport:
    return await ingest_upload(request, principal, library, source, filename)


async def ingest_upload(
    request: Request,
    principal: Principal,
    library: bool = False,
    source: str | None = None,
    filename: str | None = None,
) -> IngestReport:
    """``POST /v1/images`` once the token and the query are checked (by FastAPI, or by
    ``dhash_service.api.upload_lane`` for a request without a query)."""
    ctx = app_context(request)
    upload = await read_upload(request, ctx.settings.max_upload_bytes)
    name = filename or upload.filename

    def run(cancelled: threading.Event) -> tuple[IngestReport, DigestResult]:
        return ctx.service.ingest(
            upload.data,
            filename=name,
            library=library,
            source=source,
            actor=principal.name,
            cancelled=cancelled,
        )

    return await _extract(ctx, request, principal, upload.data, run)


@router.post(
    "/hash",
    response_model=HashReport,
    summary="Hash every image in an upload; nothing is stored",
    openapi_extra=UPLOAD_REQUEST_BODY,
    responses=error_responses(Unavailable) | UPLOAD_ERRORS,
)
async def hash_upload(
    request: Request,
    principal: Annotated[Principal, Depends(require_read)],
    filename: Annotated[
        str | None, Query(max_length=255, description="Overrides the part's.")
    ] = None,
) -> HashReport:
    return await hash_only_upload(request, principal, filename)


async def hash_only_upload(
    request: Request, principal: Principal, filename: str | None = None
) -> HashReport:
    """``POST /v1/hash`` once the token and the query are checked (as ``ingest_upload``)."""
    ctx = app_context(request)
    upload = await read_upload(request, ctx.settings.max_upload_bytes)
    name = filename or upload.filename

    def run(cancelled: threading.Event) -> tuple[HashReport, DigestResult]:
        return ctx.service.hash_only(upload.data, filename=name, cancelled=cancelled)

    return await _extract(ctx, request, principal, upload.data, run)


@router.get(
    "/images/{image_id}",
    response_model=ImageOut,
    summary="One stored image",
    responses=error_responses(AuthError, Forbidden, NotFound, InputError, Unavailable),
)
def get_image(
    request: Request,
    _principal: Annotated[Principal, Depends(require_read)],
    image_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> ImageOut:
    return app_context(request).service.get_image(image_id)


@router.get(
    "/search",
    response_model=SearchOut,
    summary="Library images within a Hamming radius of a hash, nearest first",
    responses=error_responses(AuthError, Forbidden, InputError, Unavailable),
)
def search(
    request: Request,
    _principal: Annotated[Principal, Depends(require_read)],
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
    responses=error_responses(AuthError, Forbidden, InputError, Unavailable),
)
def review_items(
    request: Request,
    _principal: Annotated[Principal, Depends(require_review)],
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
    responses=error_responses(AuthError, Forbidden, NotFound, Conflict, InputError, Unavailable),
)
def resolve_review(
    request: Request,
    principal: Annotated[Principal, Depends(require_review)],
    item_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    decision: Annotated[ReviewDecision, Body()],
) -> ReviewItemOut:
    service = app_context(request).service
    return service.resolve_review(item_id, decision.action, decision.reviewer or principal.name)
