"""The channels of an escalation level's contacts: the configured channels, re-aimed.

A contact is one of the ordinary channels with its own target — a Slack mention or channel, a
Teams or Discord webhook, a list of e-mail addresses — so it is built by the same code as the
environment's channels (``build``, supplied by the factory, applies the overrides to the
notification settings) and then named after its target, so its deliveries and outbox rows stay
apart from the ordinary ones and ``dhash notify flush`` can find it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import SecretStr

from .channel import Channel
from .escalation_config import Contact, EmailContact, SlackContact
from .model import Event
from .notifier import Unavailable

# ``build(channel, settings overrides)``: an ordinary channel built from the notification
# settings with these fields replaced (e.g. ``{"smtp_to": [...]}``).
ChannelBuilder = Callable[[str, Mapping[str, Any]], "Channel | Unavailable"]


def contact_name(contact: Contact) -> str:
    """Stable and readable: ``slack:@oncall-dhash``, ``email:ops@x.com``, ``teams:3f9a0c1d``."""
    if isinstance(contact, SlackContact):
        where = f"@{_digest(contact.webhook_url)}" if contact.webhook_url else ""
        return f"slack:{contact.to}{where}"
    if isinstance(contact, EmailContact):
        return "email:" + ",".join(contact.to)
    return f"{contact.channel}:{_digest(contact.webhook_url) if contact.webhook_url else 'default'}"


def _digest(secret: str | None) -> str:
    return hashlib.sha256((secret or "").encode("utf-8")).hexdigest()[:8]


def contact_channel(contact: Contact, build: ChannelBuilder) -> Channel | Unavailable:
    name = contact_name(contact)
    overrides: dict[str, Any] = {}
    if isinstance(contact, EmailContact):
        overrides["smtp_to"] = list(contact.to)
    elif contact.webhook_url:
        overrides[f"{contact.channel}_webhook_url"] = SecretStr(contact.webhook_url)
    base = build(contact.channel, overrides)
    if isinstance(base, Unavailable):
        return replace(base, name=name)
    if isinstance(contact, SlackContact):
        return SlackTarget(base, name, contact.mention, contact.room)
    return Renamed(base, name)


@dataclass(frozen=True)
class Renamed:
    """An ordinary channel under the contact's name."""

    inner: Channel = field(repr=False)
    name: str

    def render(self, event: Event) -> dict[str, Any]:
        return self.inner.render(event)

    def deliver(self, payload: dict[str, Any], seconds_left: float) -> str:
        return self.inner.deliver(payload, seconds_left)

    def secret_values(self) -> tuple[str, ...]:
        return self.inner.secret_values()


@dataclass(frozen=True)
class SlackTarget(Renamed):
    """A Slack page: the mention leads the message *unescaped* (the only way a webhook message
    pings anyone; the rest stays escaped), and a ``#channel`` target is the payload's channel
    override (honoured by legacy webhooks; an app's webhook posts to its own channel)."""

    mention: str | None = None
    room: str | None = None

    def render(self, event: Event) -> dict[str, Any]:
        payload = dict(self.inner.render(event))
        if self.mention:
            payload["text"] = f"{self.mention} {payload.get('text', '')}"
            attachments = payload.get("attachments") or []
            if attachments:
                blocks = attachments[0].get("blocks", [])
                blocks.insert(
                    1, {"type": "section", "text": {"type": "mrkdwn", "text": self.mention}}
                )
        if self.room:
            payload["channel"] = self.room
        return payload
