"""Slack incoming webhook: Block Kit message in a coloured attachment.

Colour needs the (legacy but supported) ``attachments`` wrapper; ``text`` is the notification
fallback. User text is escaped for mrkdwn so a message cannot ping ``<!channel>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import render
from .model import Event
from .webhook import WebhookChannel

# Block Kit limits (api.slack.com/reference/block-kit/blocks).
HEADER_CHARS = 150
SECTION_CHARS = 3000
FIELD_CHARS = 2000
MAX_FIELDS = 10


def escape_mrkdwn(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_payload(event: Event) -> dict[str, Any]:
    headline = render.truncate(render.single_line(render.headline(event)), HEADER_CHARS)
    message = render.truncate(escape_mrkdwn(event.message), SECTION_CHARS)
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": headline, "emoji": False}},
        {"type": "section", "text": {"type": "mrkdwn", "text": message}},
    ]
    fields = [
        {
            "type": "mrkdwn",
            "text": render.truncate(
                f"*{escape_mrkdwn(f.label)}*\n{escape_mrkdwn(f.value)}", FIELD_CHARS
            ),
        }
        for f in render.facts(event)[:MAX_FIELDS]
    ]
    if link := render.ack_link(event):
        alert = event.fields.get("Alert", "")
        text = f"<{escape_mrkdwn(link)}|Acknowledge alert {escape_mrkdwn(alert)}>".strip()
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": text}})
    if fields:
        blocks.append({"type": "section", "fields": fields})
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"dhash · key `{escape_mrkdwn(event.dedupe_key)}`"}
            ],
        }
    )
    return {
        "text": render.truncate(escape_mrkdwn(f"{headline}: {event.message}"), SECTION_CHARS),
        "attachments": [{"color": render.colour(event), "blocks": blocks}],
    }


@dataclass(frozen=True)
class SlackChannel(WebhookChannel):
    name: str = "slack"

    def render(self, event: Event) -> dict[str, Any]:
        return render_payload(event)
