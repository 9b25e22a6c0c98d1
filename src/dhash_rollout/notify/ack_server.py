"""``dhash notify ack-server``: the page behind each alert's ack link (docs/notifications.md).

A small Starlette app next to the notification store (docs/architecture.md says why here and
not in the service's console). ``GET /ack/<token>`` only *shows* the alert and a confirm form,
because chat unfurlers, mail scanners and browser prefetchers follow links on their own; only a
``POST`` of that form, with the acknowledger's name, acknowledges. The token is the credential
(:mod:`.ack_link`: signed, expiring, one alert) and also what a forged cross-site POST would
need, so no session or CSRF cookie is involved. Acknowledging is idempotent: a second POST, a
second person, or an alert resolved meanwhile get a page saying who did it and when.

Nothing here logs the token or the secret: uvicorn's access log (which prints request paths) is
off, and the app logs the alert id, the outcome and who acknowledged.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import jinja2
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dhash_service.errors import DhashError
from dhash_service.logs import get_logger

from .ack_link import AckGrant, Refusal, Refused, verify
from .alerts import Alert
from .escalator import Escalator, ack_command, ack_via_link
from .model import has_line_break

_log = get_logger("dhash.notify")

MAX_FORM_BYTES = 4096
MAX_NAME_CHARS = 80
_CSS = (
    "body{font:16px/1.45 system-ui,sans-serif;margin:0;padding:1.2rem;color:#1d1d1f}"
    "main{max-width:40rem;margin:auto}h1{font-size:1.3rem}"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem}dt{color:#555}"
    "dd{margin:0;overflow-wrap:anywhere}pre{white-space:pre-wrap;background:#f4f4f6;padding:.6rem}"
    "input,button{font:inherit;padding:.5rem;margin:.3rem 0}button{background:#b00020;"
    "color:#fff;border:0;border-radius:4px;padding:.6rem 1.2rem}.error{color:#b00020}"
)
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()
# Only the page's own inline style; no script, no frame, forms post back to this origin only.
CSP = (
    f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",  # the token is in the URL: never hand it on
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",  # a framed confirm button could be clicked by trickery
    "x-robots-tag": "noindex, nofollow",
}

_TEMPLATES = {
    "base.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title><style>{{ css|safe }}</style></head>
<body><main><h1>{{ title }}</h1>{% block body %}{% endblock %}</main></body></html>
""",
    "alert.html": """{% extends "base.html" %}{% block body %}
{% if note %}<p>{{ note }}</p>{% endif %}
{% if alert %}<dl>
<dt>Alert</dt><dd>{{ alert.id }}</dd>
<dt>Environment</dt><dd>{{ alert.env }}</dd>
<dt>Severity</dt><dd>{{ alert.severity.name }}</dd>
<dt>Opened</dt><dd>{{ opened }}</dd>
<dt>State</dt><dd>{{ state }}</dd>
{% for label, who in paged %}<dt>{{ label }}</dt><dd>{{ who }}</dd>{% endfor %}
</dl>
<pre>{{ alert.event.message }}</pre>{% endif %}
{% if form %}
<form method="post">
<p>Acknowledging stops the climb: no further level is paged, and those already paged are told
who acknowledged.</p>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
<label for="by">Your name</label><br>
<input id="by" name="by" required maxlength="{{ max_name }}" autocomplete="name"
 value="{{ name }}"><br>
<button type="submit">Acknowledge alert {{ alert.id }}</button>
</form>
<p>Or on a shell: <code>{{ command }} --by NAME</code></p>
{% endif %}
{% endblock %}
""",
}
_jinja = jinja2.Environment(
    loader=jinja2.DictLoader(_TEMPLATES), autoescape=True, undefined=jinja2.StrictUndefined
)


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _page(status: int, title: str, **values: Any) -> HTMLResponse:
    context: dict[str, Any] = {
        "note": None,
        "alert": None,
        "form": False,
        "error": None,
        "name": "",
        "max_name": MAX_NAME_CHARS,
        "command": "",
        "opened": "",
        "state": "",
        "paged": [],
        **values,
    }
    html = _jinja.get_template("alert.html").render(title=title, css=_CSS, **context)
    return HTMLResponse(html, status_code=status)


def _alert_page(status: int, title: str, alert: Alert, **values: Any) -> HTMLResponse:
    paged = [
        (n.label, ", ".join(n.contacts) or "(sending)")
        for n in alert.notices
        if n.level is not None
    ]
    return _page(
        status,
        title,
        alert=alert,
        opened=_iso(alert.opened_at),
        state=_state_text(alert),
        paged=paged,
        command=ack_command(alert.id),
        **values,
    )


def _state_text(alert: Alert) -> str:
    if alert.resolved_at is not None:
        return f"resolved by {alert.resolved_by} at {_iso(alert.resolved_at)}"
    if alert.acked_at is not None:
        via = f" through {alert.acked_via}" if alert.acked_via else ""
        return f"acknowledged by {alert.acked_by} at {_iso(alert.acked_at)}{via}"
    return "open: escalating until acknowledged"


def check_name(text: str) -> str | None:
    """Why ``text`` cannot be recorded as who acknowledged, or None."""
    name = text.strip()
    if not name:
        return "Please give your name: it is recorded and told to those already paged."
    if len(name) > MAX_NAME_CHARS or has_line_break(name) or any(ord(c) < 32 for c in name):
        return f"A name is one line of at most {MAX_NAME_CHARS} characters."
    return None


class _SecurityHeaders:
    """Every response (ours and Starlette's own 404/405) carries :data:`SECURITY_HEADERS`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.decode("latin-1").lower() not in SECURITY_HEADERS
                ]
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


async def _form(request: Request) -> dict[str, str] | Response:
    """The urlencoded form, at most :data:`MAX_FORM_BYTES` (read with a cap, not trusted)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return PlainTextResponse("send the confirm form", status_code=415)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return PlainTextResponse("form too large", status_code=413)
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return PlainTextResponse("unreadable form", status_code=400)
    return {k: v[0] for k, v in fields.items() if v}


def ack_app(make_escalator: Callable[[], Escalator], secrets: str | Sequence[str]) -> ASGIApp:
    """The ack listener. ``make_escalator`` is called per request (a long-lived listener sees
    the environments file as it is now); its clock also decides whether a link expired.
    ``secrets``: the key links are signed with, then the previous one during a rotation."""

    def refused(why: Refused) -> Response:
        _log.info("notify.ack_link_refused", reason=str(why.reason), alert=_alert_of(why))
        if why.reason is Refusal.EXPIRED and why.grant is not None:
            note = (
                f"This link expired at {_iso(why.grant.expires_at)}. A newer page carries a "
                f"fresh one; or acknowledge on a shell: {ack_command(why.grant.alert_id)}"
            )
            return _page(410, "Link expired", note=note)
        return _page(404, "Not an acknowledgement link", note="This link is not valid.")

    def grant_of(escalator: Escalator, token: str) -> AckGrant | Response:
        found = verify(secrets, token, escalator.clock())
        return refused(found) if isinstance(found, Refused) else found

    def linked(token: str) -> tuple[Escalator, AckGrant, Alert] | Response:
        """The alert a link names, or the page refusing it (forged, expired, unknown alert)."""
        escalator = make_escalator()
        grant = grant_of(escalator, token)
        if isinstance(grant, Response):
            return grant
        alert = escalator.alerts.get(grant.alert_id)
        if alert is None:
            return _page(404, "No such alert", note=f"Alert {grant.alert_id} is not in the store.")
        return escalator, grant, alert

    def show(token: str) -> Response:
        found = linked(token)
        if isinstance(found, Response):
            return found
        _escalator, _grant, alert = found
        if not alert.is_open:
            return _alert_page(200, f"Alert {alert.id} is {alert.state}", alert)
        return _alert_page(200, f"Acknowledge alert {alert.id}?", alert, form=True)

    def acknowledge(token: str, form: dict[str, str]) -> Response:
        found = linked(token)
        if isinstance(found, Response):
            return found
        escalator, grant, alert = found
        name = form.get("by", "")
        if problem := check_name(name):
            title = f"Acknowledge alert {alert.id}?"
            return _alert_page(400, title, alert, form=alert.is_open, error=problem, name=name)
        via = ack_via_link(escalator.level_name(alert, grant.level))
        alert, changed, run = escalator.ack(alert.id, name.strip(), via=via)
        if not changed:
            return _alert_page(200, f"Alert {alert.id} was already {alert.state}", alert)
        told = sorted({o.channel for s in run.sent for o in s.report.outcomes})
        _log.info("notify.acked_via_link", alert=alert.id, by=alert.acked_by, via=via, told=told)
        note = "No further levels will be paged." + (f" Told: {', '.join(told)}." if told else "")
        return _alert_page(200, f"Alert {alert.id} acknowledged", alert, note=note)

    async def ack(request: Request) -> Response:
        token = str(request.path_params["token"])
        try:
            if request.method == "POST":
                form = await _form(request)
                if isinstance(form, Response):
                    return form
                return await run_in_threadpool(acknowledge, token, form)
            return await run_in_threadpool(show, token)
        except DhashError as exc:  # e.g. the store is unusable: say so, point at the CLI
            _log.warning("notify.ack_page_failed", error=exc.message)
            note = f"{exc.message}. Acknowledge on a shell with `dhash notify ack ID`."
            return _page(503, "Cannot acknowledge here right now", note=note)

    async def health(_request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/ack/{token}", ack, methods=["GET", "POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
    return _SecurityHeaders(app)


def _alert_of(refusal: Refused) -> str | None:
    return refusal.grant.alert_id if refusal.grant else None


class _DropAll(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return False


def server(app: ASGIApp, host: str, port: int) -> uvicorn.Server:
    """The listener's uvicorn server. Its access log is silenced for good (a filter, which a
    later logging setup does not remove): every request path there holds a token."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _DropAll) for f in access.filters):
        access.addFilter(_DropAll())
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        lifespan="off",
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(app: ASGIApp, host: str, port: int) -> None:
    """Run the listener until SIGTERM/SIGINT (uvicorn then re-raises the signal, so the process
    ends by it after a graceful shutdown, as systemd expects of a stopped service)."""
    server(app, host, port).run()
