"""Discord webhook: one embed with the colour as an integer and facts as inline fields.

``allowed_mentions`` is empty so a message containing ``@everyone`` pings nobody.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import render
from .model import Event
from .webhook import WebhookChannel

# Embed limits (discord.com/developers/docs/resources/message#embed-object-embed-limits).
TITLE_CHARS = 256
DESCRIPTION_CHARS = 4096
FIELD_NAME_CHARS = 256
FIELD_VALUE_CHARS = 1024
MAX_FIELDS = 25
FOOTER_CHARS = 2048
EMBED_TOTAL_CHARS = 6000
DESCRIPTION_RESERVED_CHARS = 2000


def render_payload(event: Event, now: datetime | None = None) -> dict[str, Any]:
    title = render.truncate(render.single_line(render.headline(event)), TITLE_CHARS)
    footer = render.truncate(f"dhash · key {event.dedupe_key}", FOOTER_CHARS)
    # The 6000-character total is shared: keep room for the message, then add facts that fit.
    budget = EMBED_TOTAL_CHARS - len(title) - len(footer)
    reserved = min(len(event.message), DESCRIPTION_CHARS, DESCRIPTION_RESERVED_CHARS)
    fields: list[dict[str, Any]] = []
    for fact in render.facts(event)[:MAX_FIELDS]:
        name = render.truncate(fact.label, FIELD_NAME_CHARS)
        value = render.truncate(fact.value, FIELD_VALUE_CHARS)
        if len(name) + len(value) > budget - reserved:
            break
        budget -= len(name) + len(value)
        fields.append({"name": name, "value": value, "inline": True})
    embed: dict[str, Any] = {
        "title": title,
        "description": render.truncate(event.message, min(DESCRIPTION_CHARS, budget)),
        "color": int(render.colour(event).lstrip("#"), 16),
        "fields": fields,
        "footer": {"text": footer},
        "timestamp": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
    }
    if link := render.ack_link(event):
        embed["url"] = link  # the title becomes the ack link
    return {"username": "dhash", "embeds": [embed], "allowed_mentions": {"parse": []}}


@dataclass(frozen=True)
class DiscordChannel(WebhookChannel):
    name: str = "discord"

    def render(self, event: Event) -> dict[str, Any]:
        return render_payload(event)
