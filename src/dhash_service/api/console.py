"""The review console: server-rendered pages at ``/login`` and ``/review`` (docs/review.md).

Thin like ``v1``: each route checks the session (and, on POST, its CSRF token), calls the
service's ``ReviewDesk`` and renders a Jinja2 template with autoescaping on, so any stored
string (sources, locators, names) is shown as text. Pages and thumbnails need a session; a
request without one is sent to ``/login`` (303). Assets are served from this package
(``/static/review``), never a CDN, and the Content-Security-Policy allows nothing else: no
inline script, no off-site request. Decisions go through the same audited use case as
``POST /v1/review/{id}``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import APIRouter, FastAPI, Form, Path, Query, Request
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from dhash_service.api.deps import app_context
from dhash_service.api.reviewers import (
    LOGIN_CSRF_COOKIE,
    MAX_CREDENTIAL_LENGTH,
    SESSION_COOKIE,
    new_secret,
    same_secret,
    session_hash,
)
from dhash_service.errors import Conflict, DhashError, Forbidden
from dhash_service.logs import get_logger
from dhash_service.review_desk import AGES, REASONS, ReviewDesk, queue_filter
from dhash_service.review_exchange import DECISION_FIELDS, decision_record, export
from dhash_service.service import DhashService
from dhash_service.store.models import utcnow

log = get_logger(__name__)

router = APIRouter(include_in_schema=False)

HERE = FsPath(__file__).resolve().parent
STATIC_DIR = HERE / "static"
MAX_ID = 2**63 - 1
QUEUE_PAGE = 50
REASON_TEXT = {
    "review_band": "the nearest library image is within the review band, not close enough to "
    "be a match on its own",
    "ambiguous": "two or more library images are about as near: which one (if any) is it?",
    "low_information": "the image holds little detail (flat, tiny or noisy), so its hash "
    "alone cannot be trusted",
}
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
)


def _age(when: datetime) -> str:
    seconds = max(0, int((utcnow() - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


templates.filters["age"] = _age
templates.filters["utc"] = lambda when: when.strftime("%Y-%m-%d %H:%M:%S UTC") if when else ""


class LoginRequired(Exception):
    """No live session: the browser is sent to the login page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


@dataclass(frozen=True)
class ConsoleSession:
    reviewer: str
    csrf_token: str
    key: str  # sha256 of the cookie


# --- plumbing --------------------------------------------------------------------------------


def _service(request: Request) -> DhashService:
    return app_context(request).service


def _desk(request: Request) -> ReviewDesk:
    return _service(request).desk


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _page(
    request: Request,
    name: str,
    status_code: int = 200,
    session: ConsoleSession | None = None,
    **context: Any,
) -> HTMLResponse:
    html = templates.get_template(name).render(
        session=session, path=request.url.path, reasons=REASONS, reason_text=REASON_TEXT, **context
    )
    return HTMLResponse(html, status_code=status_code, headers=_headers())


def _headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
        "X-Frame-Options": "DENY",
    }


def _session(request: Request) -> ConsoleSession:
    """The live session of this request, or ``LoginRequired``."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and len(cookie) <= MAX_CREDENTIAL_LENGTH:
        key = session_hash(cookie)
        service = _service(request)
        with service.store_errors():
            found = service.desk.store.session(key, utcnow())
        if found is not None:
            return ConsoleSession(found.reviewer, found.csrf_token, key)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise LoginRequired(target)


def _posted(request: Request, csrf: str) -> ConsoleSession:
    """The session of a form post whose CSRF token is the session's; otherwise 403."""
    session = _session(request)
    if not same_secret(csrf, session.csrf_token):
        log.warning("console.csrf_refused", reviewer=session.reviewer, path=request.url.path)
        raise Forbidden(
            "this form was not sent by your console session (missing or wrong CSRF "
            "token); reload the page and try again"
        )
    return session


def _safe_next(value: str | None) -> str:
    """Only a path of this console: never another site (``//evil``), never a scheme."""
    if (
        value
        and value.startswith(("/review", "/login"))
        and "//" not in value
        and "\\" not in value
    ):
        return value[:2000]
    return "/review"


def _filter_query(reason: str | None, source: str | None, age: str | None) -> str:
    pairs = [(k, v) for k, v in (("reason", reason), ("source", source), ("age", age)) if v]
    return urlencode(pairs)


def _with_query(path: str, query: str) -> str:
    return f"{path}?{query}" if query else path


def _redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=303, headers={"Cache-Control": "no-store"})


# --- login -----------------------------------------------------------------------------------


@router.get("/login")
def login_page(
    request: Request, next: Annotated[str | None, Query(max_length=2000)] = None
) -> HTMLResponse:
    return _login_form(request, _safe_next(next))


def _login_form(
    request: Request, target: str, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    """The login page with a fresh double-submit CSRF token in its form and its cookie."""
    token = new_secret()
    response = _page(
        request, "login.html", status_code=status_code, login_csrf=token, next=target, error=error
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    return response


@router.post("/login")
def login(
    request: Request,
    name: Annotated[str, Form(max_length=MAX_CREDENTIAL_LENGTH)] = "",
    token: Annotated[str, Form(max_length=MAX_CREDENTIAL_LENGTH)] = "",
    csrf: Annotated[str, Form(max_length=MAX_CREDENTIAL_LENGTH)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/review",
) -> Response:
    target = _safe_next(next)
    if not same_secret(request.cookies.get(LOGIN_CSRF_COOKIE), csrf):
        log.warning("console.login_csrf_refused")
        return login_page(request, target)  # a fresh form; nothing was checked
    accounts = app_context(request).reviewers
    reviewer = accounts.authenticate(name, token)
    if reviewer is None:
        log.warning("console.login_failed", configured=accounts.configured)
        message = (
            "That name and token do not match a reviewer."
            if accounts.configured
            else "No reviewer accounts are configured (DHASH_REVIEWER_TOKENS)."
        )
        return _login_form(request, target, error=message, status_code=401)
    cookie = new_secret()
    seconds = app_context(request).settings.review_session_seconds
    now = utcnow()
    service = _service(request)
    with service.store_errors():
        service.desk.store.create_session(
            session_hash(cookie), reviewer, new_secret(), now, now + timedelta(seconds=seconds)
        )
    log.info("console.login", reviewer=reviewer)
    done = _redirect(target)
    done.set_cookie(
        SESSION_COOKIE,
        cookie,
        max_age=int(seconds),
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
    )
    done.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return done


@router.post("/logout")
def logout(
    request: Request, csrf: Annotated[str, Form(max_length=MAX_CREDENTIAL_LENGTH)] = ""
) -> Response:
    session = _posted(request, csrf)
    service = _service(request)
    with service.store_errors():
        service.desk.store.end_session(session.key)
    log.info("console.logout", reviewer=session.reviewer)
    response = _redirect("/login")
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# --- the queue -------------------------------------------------------------------------------


@router.get("/review")
def queue_page(
    request: Request,
    *,
    reason: Annotated[str | None, Query(max_length=32)] = None,
    source: Annotated[str | None, Query(max_length=200)] = None,
    age: Annotated[str | None, Query(max_length=8)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    done: Annotated[int, Query(ge=0, le=1)] = 0,
    bulk: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    session = _session(request)
    where = queue_filter(reason, source, age)
    service = _service(request)
    with service.store_errors():
        page = service.desk.page(where, QUEUE_PAGE, offset)
    query = _filter_query(reason, source, age)
    return _page(
        request,
        "queue.html",
        session=session,
        page=page,
        where={"reason": reason or "", "source": source or "", "age": age or ""},
        ages=list(AGES),
        query=query,
        offset=offset,
        page_size=QUEUE_PAGE,
        done=bool(done),
        bulk=bulk,
        now=utcnow(),
    )


@router.get("/review/next")
def next_item(
    request: Request,
    reason: Annotated[str | None, Query(max_length=32)] = None,
    source: Annotated[str | None, Query(max_length=200)] = None,
    age: Annotated[str | None, Query(max_length=8)] = None,
) -> Response:
    """Claim the next item of the filtered queue and open it (the queue when none is left)."""
    session = _session(request)
    where = queue_filter(reason, source, age)
    service = _service(request)
    with service.store_errors():
        found = service.desk.next_item(session.reviewer, where)
    query = _filter_query(reason, source, age)
    if found is None:
        return _redirect(_with_query("/review", "&".join(p for p in (query, "done=1") if p)))
    return _redirect(_with_query(f"/review/{found}", query))


@router.post("/review/bulk")
def bulk_decide(
    request: Request,
    *,
    action: Annotated[Literal["confirm", "reject"], Form()],
    csrf: Annotated[str, Form(max_length=MAX_CREDENTIAL_LENGTH)] = "",
    ids: Annotated[list[int], Form(max_length=500)] = [],  # noqa: B006 (FastAPI copies it)
    scope: Annotated[Literal["selected", "filtered"], Form()] = "selected",
    reason: Annotated[str | None, Form(max_length=32)] = None,
    source: Annotated[str | None, Form(max_length=200)] = None,
    age: Annotated[str | None, Form(max_length=8)] = None,
) -> Response:
    """Decide the ticked items, or the whole filtered selection: one audited decision each."""
    session = _posted(request, csrf)
    service = _service(request)
    where = queue_filter(reason, source, age)
    with service.store_errors():
        chosen = service.desk.selection(where) if scope == "filtered" else ids
        result = service.desk.bulk(chosen, action, session.reviewer)
    log.info(
        "console.bulk",
        reviewer=session.reviewer,
        action=action,
        decided=len(result.decided),
        refused=len(result.refused),
    )
    summary = f"{action}: {len(result.decided)} decided"
    if result.refused:
        summary += f", {len(result.refused)} left (claimed by someone else or already decided)"
    query = _filter_query(reason, source, age)
    return _redirect(
        _with_query("/review", "&".join(p for p in (query, urlencode({"bulk": summary})) if p))
    )


# --- decisions log and statistics (before /review/{id}) -------------------------------------


@router.get("/review/decisions")
def decisions_page(
    request: Request, offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0
) -> HTMLResponse:
    session = _session(request)
    service = _service(request)
    with service.store_errors():
        rows = service.desk.decisions(100, offset)
    return _page(
        request, "decisions.html", session=session, rows=rows, offset=offset, page_size=100
    )


@router.get("/review/decisions.{fmt}")
def export_decisions(request: Request, fmt: Literal["csv", "json"]) -> Response:
    _session(request)
    records = (decision_record(row) for row in _desk(request).all_decisions())
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    body = export(records, DECISION_FIELDS, fmt)
    headers = {
        "Content-Disposition": f'attachment; filename="dhash-review-decisions.{fmt}"',
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
    }
    return StreamingResponse(body, media_type=media, headers=headers)


@router.get("/review/stats")
def stats_page(request: Request) -> HTMLResponse:
    session = _session(request)
    service = _service(request)
    with service.store_errors():
        stats = service.desk.stats()
    return _page(request, "stats.html", session=session, stats=stats, thresholds=service.thresholds)


@router.get("/review/thumbs/{image_id}")
def thumbnail(request: Request, image_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> Response:
    _session(request)
    service = _service(request)
    with service.store_errors():
        found = service.desk.thumbnail(image_id)
    headers = {"Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
    return Response(found.data, media_type=found.media_type, headers=headers)


# --- one item --------------------------------------------------------------------------------


@router.get("/review/{review_id}")
def item_page(
    request: Request,
    review_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    reason: Annotated[str | None, Query(max_length=32)] = None,
    source: Annotated[str | None, Query(max_length=200)] = None,
    age: Annotated[str | None, Query(max_length=8)] = None,
) -> HTMLResponse:
    session = _session(request)
    queue_filter(reason, source, age)
    return _item(request, session, review_id, _filter_query(reason, source, age))


def _item(
    request: Request,
    session: ConsoleSession,
    review_id: int,
    query: str,
    *,
    message: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    service = _service(request)
    with service.store_errors():
        view = service.desk.open_item(review_id, session.reviewer)
        pending = service.desk.pending_count()
    mine = view.claim is not None and view.claim.claimed
    return _page(
        request,
        "item.html",
        status_code=status_code,
        session=session,
        view=view,
        mine=mine,
        query=query,
        message=message,
        pending=pending,
    )


@router.post("/review/{review_id}/decide")
def decide(
    request: Request,
    review_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    action: Annotated[Literal["confirm", "reject", "skip"], Form()],
    csrf: Annotated[str, Form(max_length=MAX_CREDENTIAL_LENGTH)] = "",
    query: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    """Decide (or skip) an item, then go to the next one of the same filtered queue."""
    session = _posted(request, csrf)
    service = _service(request)
    query = _filter_query(*_query_filters(query))
    try:
        with service.store_errors():
            if action == "skip":
                service.desk.skip(review_id, session.reviewer)
            else:
                service.desk.decide(review_id, action, session.reviewer)
    except Conflict as err:
        return _item(request, session, review_id, query, message=err.message, status_code=409)
    log.info("console.decision", reviewer=session.reviewer, review_id=review_id, action=action)
    return _redirect(_with_query("/review/next", query))


def _query_filters(query: str) -> tuple[str | None, str | None, str | None]:
    values = parse_qs(query, max_num_fields=3)
    reason, source, age = (values.get(k, [None])[0] for k in ("reason", "source", "age"))
    queue_filter(reason, source, age)  # refuse what the queue would refuse
    return reason, source, age


# --- installing ------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """The console's routes, assets and error pages on ``app``."""
    app.include_router(router)
    app.mount("/static/review", StaticFiles(directory=STATIC_DIR), name="review-static")
    json_errors = app.exception_handlers[DhashError]

    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        return _redirect("/login?" + urlencode({"next": _safe_next(exc.next_path)}))

    async def errors(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DhashError)
        path = request.url.path
        if not (path.startswith(("/review", "/login", "/logout"))):
            return await _call(json_errors, request, exc)
        if exc.http_status >= 500:
            log.error("console.error", error=exc.code, message=exc.message)
        return _page(request, "error.html", status_code=exc.http_status, error=exc, session=None)

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(DhashError, errors)


async def _call(
    handler: Callable[[Request, Exception], Response | Awaitable[Response]],
    request: Request,
    exc: Exception,
) -> Response:
    result = handler(request, exc)
    if isinstance(result, Response):
        return result
    return await result
