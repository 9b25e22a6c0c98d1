"""Per-request context: a request id, one access-log line and the ``dhash_requests_total`` count.

Pure ASGI (not ``BaseHTTPMiddleware``), outermost in the app, so it sees the final status of every
request. The count is taken when the response *starts*, before the client can read a byte of it,
so a scrape made after a response arrived always includes that response. Anything a route lets
escape is logged here with its traceback and answered as a JSON ``internal_error``: the caller
never sees a traceback.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import structlog
from starlette.datastructures import MutableHeaders
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dhash_service.api.errors import REQUEST_ID_KEY, error_response
from dhash_service.errors import DhashError
from dhash_service.logs import get_logger
from dhash_service.metrics import UNMATCHED_ROUTE, ServiceMetrics

log = get_logger("dhash_service.access")

REQUEST_ID_HEADER = "x-request-id"
# An id a caller (or a proxy) sent is kept when it is short and plain; otherwise a new one is made.
_SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER.encode():
            text = value.decode("latin-1")
            return text if _SAFE_ID.fullmatch(text) else None
    return None


def route_template(scope: Scope) -> str:
    """The matched route's template (``/v1/images/{image_id}``), never the raw path.

    FastAPI records its own routes in the scope; for the others (``/openapi.json``) and for a
    405 the app's routes are asked which one matches. Paths nothing matches share one label.
    """
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    app = scope.get("app")
    partial: str | None = None
    for route in getattr(app, "routes", ()):
        match, _ = route.matches(scope)
        candidate = getattr(route, "path", None)
        if not isinstance(candidate, str):
            continue
        if match is Match.FULL:
            return candidate
        if match is Match.PARTIAL and partial is None:
            partial = candidate
    return partial or UNMATCHED_ROUTE


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})[REQUEST_ID_KEY] = request_id
        started = time.perf_counter()
        status: int | None = None

        async def send_with_context(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                MutableHeaders(scope=message).append("X-Request-ID", request_id)
                self.metrics.record_request(route_template(scope), status)
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_context)
            except Exception as exc:
                log.error("request.unhandled", error=type(exc).__name__, exc_info=exc)
                if status is not None:
                    raise  # the response already started: nothing sane left to send
                response = error_response(DhashError("internal error"), request_id)
                await response(scope, receive, send_with_context)
            finally:
                # 5xx is our fault (error); 4xx is the caller's (warning); the rest is info.
                code = 500 if status is None else status
                level = logging.ERROR if code >= 500 else logging.INFO
                if 400 <= code < 500:
                    level = logging.WARNING
                log.log(
                    level,
                    "request",
                    method=scope.get("method"),
                    route=route_template(scope),
                    path=scope.get("path"),
                    status=status,
                    client=(scope.get("client") or (None,))[0],
                    duration_ms=round((time.perf_counter() - started) * 1000, 2),
                )
