"""``/health`` (the process answers), ``/ready`` (it can serve) and ``/metrics``: all open."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from dhash_service import __version__, faults
from dhash_service.api.deps import app_context
from dhash_service.api.errors import unavailable_headers
from dhash_service.api.models import Health
from dhash_service.errors import Unavailable
from dhash_service.schemas import Readiness

router = APIRouter(tags=["probes"])

SHUTDOWN_CHECK = "shutdown"


# HEAD too (kept out of the OpenAPI document): load balancers and uptime checkers probe with it.
@router.head("/health", include_in_schema=False)
@router.get("/health", response_model=Health, summary="Liveness: the process answers")
async def health() -> Health:
    # Deliberately touches nothing: a slow store must not make a live process look dead.
    if faults.health_failing():  # an injected fault (docs/monitoring.md)
        raise Unavailable("injected fault: /health failing (DHASH_FAULT_HEALTH_FAILING)")
    return Health(status="ok", version=__version__, pid=os.getpid())


@router.head("/ready", include_in_schema=False)
@router.get(
    "/ready",
    response_model=Readiness,
    summary="Readiness: store reachable, migrations at head, index loaded, not shutting down",
    responses={Unavailable.http_status: {"model": Readiness, "description": "not ready"}},
)
async def ready(request: Request) -> Response:
    ctx = app_context(request)
    try:
        readiness = await run_in_threadpool(ctx.service.readiness)
    except Exception as exc:  # readiness answers "not ready", it never fails the probe itself
        readiness = Readiness(ready=False, checks={"service": f"error: {type(exc).__name__}"})
    saturation = ctx.admission.saturation()  # "saturated" while requests queue for a slot
    checks = {**readiness.checks, **saturation}
    ready = readiness.ready and all(value == "ok" for value in saturation.values())
    if ctx.lifecycle.draining:
        checks[SHUTDOWN_CHECK] = "draining"
        ready = False
    readiness = Readiness(ready=ready, checks=checks)
    if readiness.ready:
        return JSONResponse(readiness.model_dump(mode="json"))
    return JSONResponse(
        readiness.model_dump(mode="json"),
        status_code=Unavailable.http_status,
        headers=unavailable_headers(),
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
def metrics(request: Request) -> Response:
    body, content_type = app_context(request).metrics.render()
    return Response(body, media_type=content_type)
