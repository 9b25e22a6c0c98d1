"""Real receivers on 127.0.0.1 for the notification tests, and tests that they can say no.

``WebhookReceiver`` is a threaded HTTP server that checks each POST against the vendor's
payload rules (Slack Block Kit, Teams Workflows Adaptive Card, Discord embeds) and answers with
scripted statuses, ``Retry-After`` headers and delays. ``SmtpServer`` is aiosmtpd with optional
STARTTLS / implicit TLS and AUTH. Both record everything they receive.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

# --- vendor payload rules ---------------------------------------------------------------------

_HEX_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")
_SLACK_TEXT_TYPES = {"mrkdwn", "plain_text"}
_TEAMS_COLOURS = {"Default", "Dark", "Light", "Accent", "Good", "Warning", "Attention"}


def _text_object(obj: Any, where: str, limit: int, types: set[str]) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in types:
        return [f"{where}: text object of type {sorted(types)} expected"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"{where}: empty text"]
    if len(text) > limit:
        return [f"{where}: {len(text)} > {limit} characters"]
    return []


def validate_slack(body: Any) -> list[str]:
    """Slack incoming webhook: ``text`` fallback plus Block Kit blocks in coloured attachments."""
    if not isinstance(body, dict):
        return ["body is not an object"]
    problems = []
    if not isinstance(body.get("text"), str) or not body["text"]:
        problems.append("text (notification fallback) missing")
    attachments = body.get("attachments", [])
    if not isinstance(attachments, list):
        return [*problems, "attachments is not a list"]
    blocks_seen = list(body.get("blocks", []))
    for i, attachment in enumerate(attachments):
        if not _HEX_COLOUR.match(str(attachment.get("color", ""))):
            problems.append(f"attachments[{i}].color is not #RRGGBB")
        blocks_seen.extend(attachment.get("blocks", []))
    if not blocks_seen or len(blocks_seen) > 50:
        problems.append("1..50 blocks expected")
    for i, block in enumerate(blocks_seen):
        kind = block.get("type")
        where = f"blocks[{i}]"
        if kind == "header":
            problems += _text_object(block.get("text"), where, 150, {"plain_text"})
        elif kind == "section":
            if "text" in block:
                problems += _text_object(block["text"], where, 3000, _SLACK_TEXT_TYPES)
            fields = block.get("fields")
            if fields is not None:
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    problems.append(f"{where}: 1..10 fields expected")
                else:
                    for j, f in enumerate(fields):
                        problems += _text_object(f, f"{where}.fields[{j}]", 2000, _SLACK_TEXT_TYPES)
            if "text" not in block and fields is None:
                problems.append(f"{where}: section needs text or fields")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                problems.append(f"{where}: 1..10 context elements expected")
        elif kind != "divider":
            problems.append(f"{where}: unknown block type {kind!r}")
    return problems


def validate_teams(body: Any) -> list[str]:
    """Teams Workflows webhook: a ``message`` carrying an Adaptive Card attachment."""
    if not isinstance(body, dict) or body.get("type") != "message":
        return ["type must be 'message'"]
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return ["attachments missing"]
    problems = []
    for i, attachment in enumerate(attachments):
        if attachment.get("contentType") != "application/vnd.microsoft.card.adaptive":
            problems.append(f"attachments[{i}].contentType is not an Adaptive Card")
        card = attachment.get("content") or {}
        if card.get("type") != "AdaptiveCard":
            problems.append(f"attachments[{i}].content.type must be AdaptiveCard")
        if card.get("$schema") != "http://adaptivecards.io/schemas/adaptive-card.json":
            problems.append(f"attachments[{i}].content.$schema is not the Adaptive Card schema")
        if not re.match(r"^1\.[0-6]$", str(card.get("version", ""))):
            problems.append(f"attachments[{i}].content.version must be 1.0..1.6")
        body_elements = card.get("body")
        if not isinstance(body_elements, list) or not body_elements:
            problems.append(f"attachments[{i}].content.body missing")
            continue
        for j, element in enumerate(body_elements):
            where = f"card.body[{j}]"
            if element.get("type") == "TextBlock":
                if not isinstance(element.get("text"), str) or not element["text"]:
                    problems.append(f"{where}: TextBlock without text")
                if "color" in element and element["color"] not in _TEAMS_COLOURS:
                    problems.append(f"{where}: colour {element['color']!r} is not a card colour")
            elif element.get("type") == "FactSet":
                facts = element.get("facts")
                if not isinstance(facts, list) or not all(
                    isinstance(f.get("title"), str) and isinstance(f.get("value"), str)
                    for f in facts
                ):
                    problems.append(f"{where}: facts need string title and value")
            else:
                problems.append(f"{where}: unexpected element {element.get('type')!r}")
        for j, action in enumerate(card.get("actions", [])):
            if action.get("type") != "Action.OpenUrl" or not action.get("title"):
                problems.append(f"card.actions[{j}]: Action.OpenUrl with a title expected")
            if not str(action.get("url", "")).startswith(("https://", "http://")):
                problems.append(f"card.actions[{j}]: url must be http(s)")
    return problems


def validate_discord(body: Any) -> list[str]:
    """Discord webhook: content and/or up to 10 embeds within Discord's limits."""
    if not isinstance(body, dict):
        return ["body is not an object"]
    embeds = body.get("embeds", [])
    if not body.get("content") and not embeds:
        return ["content or embeds required"]
    if len(str(body.get("content", ""))) > 2000:
        return ["content longer than 2000"]
    problems = []
    if not isinstance(embeds, list) or len(embeds) > 10:
        return ["at most 10 embeds"]
    for i, embed in enumerate(embeds):
        where = f"embeds[{i}]"
        total = 0
        for name, limit in (("title", 256), ("description", 4096)):
            value = embed.get(name, "")
            total += len(value)
            if not isinstance(value, str) or len(value) > limit:
                problems.append(f"{where}.{name} longer than {limit}")
        if "url" in embed and not str(embed["url"]).startswith(("https://", "http://")):
            problems.append(f"{where}.url must be http(s)")
        colour = embed.get("color")
        if colour is not None and (not isinstance(colour, int) or not 0 <= colour <= 0xFFFFFF):
            problems.append(f"{where}.color must be an integer 0..0xFFFFFF")
        fields = embed.get("fields", [])
        if len(fields) > 25:
            problems.append(f"{where}: more than 25 fields")
        for j, f in enumerate(fields):
            name, value = f.get("name"), f.get("value")
            if not name or not value or len(name) > 256 or len(value) > 1024:
                problems.append(f"{where}.fields[{j}]: name 1..256 and value 1..1024 needed")
            total += len(name or "") + len(value or "")
        footer = (embed.get("footer") or {}).get("text", "")
        total += len(footer)
        if total > 6000:
            problems.append(f"{where}: {total} characters > 6000")
        if "timestamp" in embed:
            try:
                datetime.fromisoformat(embed["timestamp"])
            except ValueError:
                problems.append(f"{where}.timestamp is not ISO 8601")
    mentions = body.get("allowed_mentions")
    if mentions is not None and not isinstance(mentions.get("parse"), list):
        problems.append("allowed_mentions.parse must be a list")
    return problems


VALIDATORS: dict[str, Callable[[Any], list[str]]] = {
    "slack": validate_slack,
    "teams": validate_teams,
    "discord": validate_discord,
}
# What each vendor answers on success.
SUCCESS = {"slack": (200, "ok"), "teams": (202, ""), "discord": (204, "")}


# --- the webhook receiver ---------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    delay: float = 0.0
    echo_path: bool = False  # put the request path (the secret!) in the body, as some servers do
    trickle: float = 0.0  # drip a header one byte per 0.1 s for this long (beats read timeouts)


@dataclass(frozen=True)
class Received:
    vendor: str
    path: str
    at: float
    body: Any
    problems: tuple[str, ...]
    status: int


class WebhookReceiver:
    """POST /<vendor>/<anything>: validated against the vendor's rules, answered from a script."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Reply]] = {}
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                receiver._handle(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, vendor: str, secret: str) -> str:
        return f"http://127.0.0.1:{self.port}/{vendor}/{secret}"

    def script(self, vendor: str, *replies: Reply) -> None:
        """Answer the next requests for ``vendor`` with ``replies``, then succeed."""
        with self._lock:
            self._scripts.setdefault(vendor, []).extend(replies)

    def accepted(self, vendor: str) -> list[Any]:
        """Bodies that were valid and answered with success."""
        return [
            r.body
            for r in self.received
            if r.vendor == vendor and not r.problems and 200 <= r.status < 300
        ]

    def requests(self, vendor: str) -> list[Received]:
        return [r for r in self.received if r.vendor == vendor]

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        vendor = request.path.strip("/").split("/", 1)[0]
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length)
        try:
            body = json.loads(raw)
            problems = VALIDATORS[vendor](body) if vendor in VALIDATORS else ["unknown vendor"]
        except ValueError:
            body, problems = None, ["body is not JSON"]
        if request.headers.get("Content-Type", "").split(";")[0] != "application/json":
            problems = [*problems, "Content-Type is not application/json"]
        with self._lock:
            script = self._scripts.get(vendor, [])
            reply = script.pop(0) if script and not problems else None
        if problems:
            reply = Reply(400, body="invalid_payload: " + "; ".join(problems))
        elif reply is None:
            status, text = SUCCESS.get(vendor, (200, "ok"))
            reply = Reply(status, body=text)
        with self._lock:
            self.received.append(
                Received(
                    vendor, request.path, time.monotonic(), body, tuple(problems), reply.status
                )
            )
        if reply.delay:
            time.sleep(reply.delay)
        if reply.trickle:
            _trickle(request, reply)
            return
        text = reply.body + (f" for {request.path}" if reply.echo_path else "")
        data = text.encode()
        try:
            request.send_response(reply.status)
            for name, value in reply.headers.items():
                request.send_header(name, value)
            if reply.status != 204:
                request.send_header("Content-Length", str(len(data)))
            request.end_headers()
            if reply.status != 204:
                request.wfile.write(data)
        except OSError:
            pass  # the client gave up (timeout test)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def _trickle(request: BaseHTTPRequestHandler, reply: Reply) -> None:
    """A server that is never silent for a whole read timeout, yet never finishes in time."""
    end = time.monotonic() + reply.trickle
    try:
        request.wfile.write(f"HTTP/1.1 {reply.status} OK\r\nX-Slow: ".encode())
        while time.monotonic() < end:
            request.wfile.write(b".")
            time.sleep(0.1)
        request.wfile.write(b"\r\nContent-Length: 0\r\n\r\n")
    except OSError:
        pass  # the client went away


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    try:
        yield receiver
    finally:
        receiver.close()


# --- the SMTP server --------------------------------------------------------------------------


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: Message
    tls: bool
    authenticated: bool


class _Recorder:
    def __init__(self, temporary_failures: int = 0) -> None:
        self.mails: list[Mail] = []
        self.temporary_failures = temporary_failures

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.temporary_failures > 0:
            self.temporary_failures -= 1
            return "451 4.3.0 try again later"
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        self.mails.append(
            Mail(
                str(envelope.mail_from),
                tuple(envelope.rcpt_tos),
                message_from_bytes(raw, policy=default_policy),
                tls=session.ssl is not None,
                authenticated=bool(session.authenticated),
            )
        )
        return "250 OK"


class _ImplicitTlsSMTP(SMTP):
    """aiosmtpd only counts STARTTLS as TLS; on an implicit-TLS socket allow AUTH too."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if transport.get_extra_info("sslcontext") is not None:
            self._auth_require_tls = False
            # Record the negotiated cipher, as aiosmtpd does for STARTTLS, so tests see TLS.
            self.session.ssl = {"cipher": transport.get_extra_info("cipher")}


class _LoopbackController(Controller):
    """aiosmtpd's controller on an ephemeral port (it wants a fixed one by default)."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()

    def factory(self) -> SMTP:
        if self.ssl_context is not None:
            return _ImplicitTlsSMTP(self.handler, **self.SMTP_kwargs)
        return super().factory()


@dataclass
class SmtpServer:
    controller: Controller
    recorder: _Recorder

    @property
    def port(self) -> int:
        return int(self.controller.port)

    @property
    def mails(self) -> list[Mail]:
        return self.recorder.mails


@contextmanager
def smtp_server(
    *,
    tls: ssl.SSLContext | None = None,
    implicit_tls: bool = False,
    credentials: tuple[str, str] | None = None,
    temporary_failures: int = 0,
) -> Iterator[SmtpServer]:
    """aiosmtpd on 127.0.0.1: STARTTLS when ``tls`` is given (or implicit TLS), AUTH when
    ``credentials`` are given (then required)."""
    recorder = _Recorder(temporary_failures)
    kwargs: dict[str, Any] = {"hostname": "127.0.0.1", "port": 0, "ready_timeout": 5.0}
    if implicit_tls:
        kwargs["ssl_context"] = tls
    elif tls is not None:
        kwargs.update(tls_context=tls, require_starttls=True)
    if credentials is not None:

        def authenticate(
            server: Any, session: Any, envelope: Any, mechanism: str, data: Any
        ) -> AuthResult:
            ok = (
                isinstance(data, LoginPassword)
                and (
                    data.login.decode(),
                    data.password.decode(),
                )
                == credentials
            )
            return AuthResult(success=ok, handled=False)

        assert tls is not None, "AUTH is only offered over TLS"
        kwargs.update(authenticator=authenticate, auth_required=True)
    controller = _LoopbackController(recorder, **kwargs)
    controller.start()
    try:
        yield SmtpServer(controller, recorder)
    finally:
        controller.stop()


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the CA file the client is told to trust)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def server_tls(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


# --- the receivers refuse what a vendor would refuse ------------------------------------------


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


def _post(receiver: WebhookReceiver, vendor: str, body: Any) -> int:
    return httpx.post(receiver.url(vendor, "x"), json=body, timeout=5).status_code


def test_slack_rules_refuse_a_named_colour_and_an_overlong_header(
    receiver: WebhookReceiver,
) -> None:
    bad = {
        "text": "x",
        "attachments": [
            {
                "color": "red",
                "blocks": [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
            }
        ],
    }
    assert _post(receiver, "slack", bad) == 400
    assert len(receiver.requests("slack")[0].problems) == 2


def test_teams_rules_refuse_a_legacy_message_card(receiver: WebhookReceiver) -> None:
    legacy = {"@type": "MessageCard", "summary": "x", "text": "x"}
    assert _post(receiver, "teams", legacy) == 400


def test_teams_rules_want_the_card_schema_and_version(receiver: WebhookReceiver) -> None:
    card = {"type": "AdaptiveCard", "body": [{"type": "TextBlock", "text": "x"}]}
    attachment = {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
    assert _post(receiver, "teams", {"type": "message", "attachments": [attachment]}) == 400
    assert len(receiver.requests("teams")[0].problems) == 2


def test_discord_rules_refuse_a_string_colour_and_an_oversized_embed(
    receiver: WebhookReceiver,
) -> None:
    bad = {"embeds": [{"title": "t", "description": "d" * 4097, "color": "#ff0000"}]}
    assert _post(receiver, "discord", bad) == 400
    assert len(receiver.requests("discord")[0].problems) == 2


def test_receiver_answers_from_its_script_then_succeeds(receiver: WebhookReceiver) -> None:
    receiver.script("discord", Reply(429, {"Retry-After": "1"}))
    ok = {"embeds": [{"title": "t", "description": "d", "color": 1}]}
    assert [_post(receiver, "discord", ok) for _ in range(2)] == [429, 204]
    assert receiver.accepted("discord") == [ok]


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


def test_smtp_server_requires_starttls_and_auth_when_given_credentials(
    certificate: tuple[Path, Path],
) -> None:
    import smtplib

    client_tls = ssl.create_default_context(cafile=str(certificate[0]))
    with smtp_server(tls=server_tls(*certificate), credentials=("u", "p")) as server:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=5) as client:
            client.starttls(context=client_tls)
            with pytest.raises(smtplib.SMTPSenderRefused):
                client.sendmail("a@example.org", ["b@example.org"], b"Subject: x\r\n\r\nbody")
        assert server.mails == []
