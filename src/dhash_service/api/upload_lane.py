"""A direct lane for the two upload routes: ``POST /v1/images`` and ``POST /v1/hash`` without a
query string and with a valid token skip FastAPI's routing, dependency solving and response
validation, and run the same route code (``v1.ingest_upload``, ``v1.hash_only_upload``).

Why: an upload spends its event-loop time in Python, and on this path FastAPI's layers were
about a third of it (bench/RESULTS.md, "upload lane"). Nothing is re-implemented that could
drift: the token is read by the same ``bearer_scheme`` and checked by the same ``TokenAuth``;
a request the lane does not take (any query string, another method, a refused token) goes on to
FastAPI unchanged, so validation errors, 401/403 answers and 405s stay FastAPI's. The lane sits
inside the request-context and body-limits middleware (request id, access log, metrics, body
timeouts apply as before) and answers a ``DhashError`` as the app's handler does. The answer is
serialized as FastAPI serializes a ``response_model`` (pydantic's JSON, ``by_alias``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, TypeAdapter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from dhash_service.api import v1
from dhash_service.api.auth import READ, WRITE, Principal, bearer_scheme
from dhash_service.api.deps import app_context
from dhash_service.api.errors import REQUEST_ID_KEY, dhash_error_response
from dhash_service.errors import DhashError
from dhash_service.schemas import HashReport, IngestReport


@dataclass(frozen=True)
class LaneRoute:
    """What the lane puts in ``scope["route"]``: the route's template, which is all the
    metrics and the access log read from it (``middleware.route_template``)."""

    path: str


@dataclass(frozen=True)
class _Lane:
    route: LaneRoute
    scope: str  # the token scope the route needs
    status: int
    handle: Callable[[Request, Principal], Awaitable[BaseModel]]
    answer: TypeAdapter[Any]


LANES = {
    "/v1/images": _Lane(
        LaneRoute("/v1/images"), WRITE, 201, v1.ingest_upload, TypeAdapter(IngestReport)
    ),
    "/v1/hash": _Lane(
        LaneRoute("/v1/hash"), READ, 200, v1.hash_only_upload, TypeAdapter(HashReport)
    ),
}


class UploadLaneMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = LANES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if (
            lane is None
            or scope.get("method") != "POST"
            or scope.get("query_string")
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        try:
            principal = app_context(request).auth.authenticate(
                await bearer_scheme(request), lane.scope
            )
        except DhashError:
            await self.app(scope, receive, send)  # FastAPI answers the refusal, as ever
            return
        scope["route"] = lane.route
        try:
            report = await lane.handle(request, principal)
        except DhashError as err:
            request_id = scope.get("state", {}).get(REQUEST_ID_KEY)
            response: Response = dhash_error_response(err, request_id)
        else:
            body = lane.answer.dump_json(report, by_alias=True)
            response = Response(body, status_code=lane.status, media_type="application/json")
        await response(scope, receive, send)
