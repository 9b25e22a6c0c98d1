"""Microsoft Teams through a Workflows ("When a Teams webhook request is received") webhook.

Workflows expects a ``message`` whose attachment is an Adaptive Card; the old Office 365
connector ``MessageCard`` format is retired, so it is not produced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import render
from .model import Event
from .webhook import WebhookChannel

CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
_TONE_COLOURS: dict[render.Tone, str] = {
    "neutral": "Accent",
    "good": "Good",
    "warning": "Warning",
    "bad": "Attention",
    "critical": "Attention",
}


def render_payload(event: Event) -> dict[str, Any]:
    card: dict[str, Any] = {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "TextBlock",
                "text": render.single_line(render.headline(event)),
                "weight": "Bolder",
                "size": "Medium",
                "color": _TONE_COLOURS[render.tone(event)],
                "wrap": True,
            },
            {"type": "TextBlock", "text": event.message, "wrap": True},
            {
                "type": "FactSet",
                "facts": [{"title": f.label, "value": f.value} for f in render.facts(event)],
            },
            {
                "type": "TextBlock",
                "text": f"dhash · key {event.dedupe_key}",
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            },
        ],
    }
    if link := render.ack_link(event):
        title = f"Acknowledge alert {event.fields.get('Alert', '')}".strip()
        card["actions"] = [{"type": "Action.OpenUrl", "title": title, "url": link}]
    return {
        "type": "message",
        "attachments": [{"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card}],
    }


@dataclass(frozen=True)
class TeamsChannel(WebhookChannel):
    name: str = "teams"

    def render(self, event: Event) -> dict[str, Any]:
        return render_payload(event)
