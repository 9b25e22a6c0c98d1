"""A Slack incoming-webhook stand-in on 127.0.0.1, so the demo's notices really travel over HTTP.

The deploy's notifier posts to ``SLACK_WEBHOOK_URL`` exactly as it would to Slack; this server
answers as Slack does (``200 ok``, or ``400 invalid_payload`` for a body that is not a Slack
message) and keeps what it received for the story's end. The shape check follows Slack's
incoming-webhook rules (api.slack.com/messaging/webhooks, Block Kit): a non-empty ``text``
fallback, and blocks (top level or inside coloured ``attachments``) with header and section
text objects.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

_HEX_COLOUR = re.compile(r"^#[0-9A-Fa-f]{6}$")
_MAX_BODY = 1024 * 1024


def slack_problems(body: Any) -> list[str]:
    """What makes ``body`` something Slack would refuse; empty when it is a valid message."""
    if not isinstance(body, dict):
        return ["the body is not a JSON object"]
    problems = []
    if not isinstance(body.get("text"), str) or not body["text"].strip():
        problems.append("no text (the notification fallback)")
    blocks = body.get("blocks", [])
    attachments = body.get("attachments", [])
    if not isinstance(blocks, list) or not isinstance(attachments, list):
        return [*problems, "blocks and attachments must be lists"]
    blocks = list(blocks)
    for i, attachment in enumerate(attachments):
        if not isinstance(attachment, dict):
            problems.append(f"attachments[{i}] is not an object")
            continue
        if "color" in attachment and not _HEX_COLOUR.match(str(attachment["color"])):
            problems.append(f"attachments[{i}].color is not #RRGGBB")
        blocks.extend(attachment.get("blocks", []))
    if len(blocks) > 50:
        problems.append("more than 50 blocks")
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in ("header", "section") and "text" in block:
            text = block["text"]
            if not isinstance(text, dict) or not str(text.get("text", "")).strip():
                problems.append(f"blocks[{i}] ({kind}) has an empty text object")
        elif kind not in ("header", "section", "context", "divider"):
            problems.append(f"blocks[{i}] has an unknown type {kind!r}")
    return problems


def headline(body: Any) -> str:
    """The header block's text (what Slack shows in bold), else the fallback text."""
    if isinstance(body, dict):
        for attachment in body.get("attachments", []) or []:
            for block in attachment.get("blocks", []) if isinstance(attachment, dict) else []:
                if isinstance(block, dict) and block.get("type") == "header":
                    return str(block.get("text", {}).get("text", ""))
        return str(body.get("text", ""))[:150]
    return ""


@dataclass(frozen=True)
class Received:
    at: float  # epoch seconds
    headline: str
    problems: tuple[str, ...]

    @property
    def accepted(self) -> bool:
        return not self.problems


class WebhookReceiver:
    """``with WebhookReceiver() as hook:`` serves ``hook.url`` until the block ends."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._path = f"/services/demo/{secrets.token_hex(8)}"  # like Slack's: the URL is the key
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the story says what arrived."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self._path}"

    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.accepted]

    def rejected(self) -> list[Received]:
        with self._lock:
            return [r for r in self.received if not r.accepted]

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        if request.path != self._path:
            self._answer(request, 404, "no_service")
            return
        length = int(request.headers.get("Content-Length") or 0)
        if not 0 < length <= _MAX_BODY:
            self._answer(request, 400, "invalid_payload")
            return
        try:
            body = json.loads(request.rfile.read(length))
        except ValueError:
            body = None
        problems = tuple(slack_problems(body))
        with self._lock:
            self.received.append(Received(time.time(), headline(body), problems))
        self._answer(request, 400 if problems else 200, "invalid_payload" if problems else "ok")

    @staticmethod
    def _answer(request: BaseHTTPRequestHandler, status: int, text: str) -> None:
        data = text.encode()
        request.send_response(status)
        request.send_header("Content-Type", "text/plain")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
