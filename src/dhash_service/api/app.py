"""The app factory: wires settings, the service facade, metrics and routes into one FastAPI app.

Everything the routes use is passed in or built here and held on ``app.state``, so a test can
hand in its own service or registry, and two apps in one process never share state. The
lifespan starts the service before the first request and stops it after the last.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from dhash_service import __version__, faults
from dhash_service.api import console, probes, v1
from dhash_service.api.admission import Admission
from dhash_service.api.auth import READ, REVIEW, WRITE, TokenAuth
from dhash_service.api.bodies import BodyLimitsMiddleware
from dhash_service.api.deps import AppContext, app_context
from dhash_service.api.errors import install_error_handlers
from dhash_service.api.lifecycle import Lifecycle
from dhash_service.api.middleware import RequestContextMiddleware
from dhash_service.api.reviewers import ReviewerAccounts
from dhash_service.api.upload_lane import UploadLaneMiddleware
from dhash_service.config import Settings
from dhash_service.errors import ConfigError
from dhash_service.logs import get_logger, redactor
from dhash_service.metrics import ServiceMetrics
from dhash_service.service import DhashService

log = get_logger(__name__)


def extraction_slots(settings: Settings) -> int:
    """``DHASH_EXTRACTION_CONCURRENCY``, or when 0 this worker's share of the CPUs it may use."""
    if settings.extraction_concurrency < 0:
        raise ConfigError("DHASH_EXTRACTION_CONCURRENCY must be >= 0 (0: share the CPUs)")
    if settings.extraction_concurrency:
        return settings.extraction_concurrency
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cpus or 1) // max(1, settings.workers))


def admission_for(settings: Settings) -> Admission:
    """Image slots as ``extraction_slots``; document slots as the worker's decoder children."""
    if settings.heavy_extractions_per_client < 1 or settings.admission_queue_seconds <= 0:
        raise ConfigError(
            "need DHASH_HEAVY_EXTRACTIONS_PER_CLIENT >= 1 and DHASH_ADMISSION_QUEUE_SECONDS > 0"
        )
    return Admission(
        extraction_slots(settings),
        max(1, settings.decoder_processes or extraction_slots(settings)),
        per_client=settings.heavy_extractions_per_client,
        queue_seconds=settings.admission_queue_seconds,
    )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    ctx = app_context(app)
    await run_in_threadpool(ctx.service.start)
    log.info("service.started", version=__version__, env=ctx.settings.env)
    if not ctx.auth.configured:
        log.warning("service.no_api_tokens", effect="every /v1 endpoint answers 401")
    try:
        yield
    finally:
        await run_in_threadpool(ctx.service.stop)
        ctx.metrics.close()
        log.info("service.stopped")


def create_app(
    settings: Settings,
    service: DhashService | None = None,
    registry: CollectorRegistry | None = None,
    *,
    lifecycle: Lifecycle | None = None,
) -> FastAPI:
    """A ready-to-serve app; ``service`` defaults to a new ``DhashService(settings)``."""
    redactor.register(*settings.all_api_tokens)
    faults.configure(settings)
    service = service if service is not None else DhashService(settings)
    metrics = ServiceMetrics(
        registry, version=__version__, queue_length=service.review_queue_length
    )
    app = FastAPI(
        title="dhash",
        version=__version__,
        summary="Perceptual image hashing, matching and review.",
        lifespan=_lifespan,
        docs_url=None,  # the schema is at /openapi.json; no pages that load scripts off-site
        redoc_url=None,
    )
    app.state.dhash = AppContext(
        settings=settings,
        service=service,
        metrics=metrics,
        lifecycle=lifecycle or Lifecycle(),
        auth=TokenAuth(
            settings.api_tokens,
            {
                READ: settings.api_read_tokens,
                f"{READ}+{WRITE}": settings.api_write_tokens,
                f"{READ}+{REVIEW}": settings.api_review_tokens,
            },
        ),
        admission=admission_for(settings),
        reviewers=ReviewerAccounts(settings.reviewer_tokens),
    )
    install_error_handlers(app)
    app.include_router(probes.router)
    app.include_router(v1.router)
    console.install(app)  # the review console: /login, /review (docs/review.md)
    # Innermost: inside the body limits and the request context, before FastAPI's routing.
    app.add_middleware(UploadLaneMiddleware)
    app.add_middleware(
        BodyLimitsMiddleware,
        max_json_bytes=settings.max_json_bytes,
        read_timeout=settings.body_read_timeout_seconds,
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)  # outermost: sees every answer
    return app
