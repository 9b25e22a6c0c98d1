"""Every error answer: one JSON shape, the status taken from the error class, never a traceback.

``DhashError`` subclasses carry their HTTP status (``dhash_service.errors``); this module is the
one place that turns them into responses. FastAPI's request-validation errors become
``InputError`` (422), Starlette's routing errors (404, 405) keep their status, and anything
unexpected is answered by the request middleware as a plain ``internal_error`` (500).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from dhash_service.api.models import ErrorBody
from dhash_service.errors import AuthError, DhashError, InputError, NotFound, Unavailable
from dhash_service.logs import get_logger

log = get_logger(__name__)

REQUEST_ID_KEY = "request_id"
# A 503 here is temporary (index loading, store down, draining): tell clients when to retry.
RETRY_AFTER_SECONDS = 1


def error_body(err: DhashError, request_id: str | None) -> dict[str, Any]:
    body: dict[str, Any] = jsonable_encoder(err.to_dict())
    body[REQUEST_ID_KEY] = request_id
    return body


def unavailable_headers() -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_SECONDS)}


def error_response(err: DhashError, request_id: str | None) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(err, AuthError):
        headers["WWW-Authenticate"] = 'Bearer realm="dhash"'
    if isinstance(err, Unavailable):
        headers.update(unavailable_headers())
    if err.http_status == 408:  # the body was not read: the connection cannot carry another
        headers["Connection"] = "close"  # request (RFC 9110, 15.5.9); uvicorn closes it now
    return JSONResponse(error_body(err, request_id), status_code=err.http_status, headers=headers)


def _request_id(request: Request) -> str | None:
    value = request.scope.get("state", {}).get(REQUEST_ID_KEY)
    return value if isinstance(value, str) else None


def dhash_error_response(exc: DhashError, request_id: str | None) -> JSONResponse:
    """The answer to a ``DhashError`` a route raised, logged when it is a 5xx (the FastAPI
    handler and ``dhash_service.api.upload_lane`` both answer through here)."""
    if exc.http_status >= 500:
        # "Not ready" and "store down" are states the message names (with Retry-After), not bugs:
        # a stack trace would only bury them.
        trace = None if isinstance(exc, Unavailable) else exc
        log.error("request.error", error=exc.code, message=exc.message, exc_info=trace)
    return error_response(exc, request_id)


async def _dhash_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DhashError)
    return dhash_error_response(exc, _request_id(request))


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [
        {"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", ""))}
        for e in exc.errors()
    ]
    err = InputError("the request is not valid", detail={"errors": problems})
    return error_response(err, _request_id(request))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == NotFound.http_status:
        return error_response(NotFound("no such route"), _request_id(request))
    if exc.status_code == HTTPStatus.BAD_REQUEST:  # FastAPI could not parse the body
        return error_response(InputError("the request body cannot be parsed"), _request_id(request))
    phrase = HTTPStatus(exc.status_code).phrase
    body = {
        "error": phrase.lower().replace(" ", "_").replace("-", "_"),
        "message": str(exc.detail) if exc.detail else phrase,
        REQUEST_ID_KEY: _request_id(request),
    }
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DhashError, _dhash_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def error_responses(*errors: type[DhashError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the errors a route can answer with."""
    codes: dict[int, list[str]] = {}
    for err in errors:
        codes.setdefault(err.http_status, []).append(err.code)
    return {
        status: {"model": ErrorBody, "description": ", ".join(names)}
        for status, names in sorted(codes.items())
    }
