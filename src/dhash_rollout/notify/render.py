"""Channel-neutral wording: headline, colour, facts and plain text of an :class:`Event`.

Every channel renders from these pieces so a message reads the same in Slack, Teams, Discord,
e-mail and the notification log; only the vendor's payload shape differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .model import Event, Severity

_PHASE_LABELS = {
    "start": "Deployment started",
    "success": "Deployment succeeded",
    "complete": "Deployment succeeded",
    "failure": "Deployment failed",
    "rollback": "Rollback",
}
_KIND_LABELS = {
    "deploy": "Deployment",
    "success": "Success",
    "failure": "Failure",
    "rollback": "Rollback",
    "info": "Info",
    "backup": "Backup",
    "gate": "Quality gate",
}

Tone = Literal["neutral", "good", "warning", "bad", "critical"]

_KIND_TONES: dict[str, Tone] = {
    "deploy": "neutral",
    "info": "neutral",
    "backup": "neutral",
    "success": "good",
    "gate": "warning",
    "failure": "bad",
    "rollback": "warning",
}
_TONE_ORDER: tuple[Tone, ...] = ("neutral", "good", "warning", "bad", "critical")
_SEVERITY_TONES: dict[Severity, Tone] = {
    Severity.INFO: "neutral",
    Severity.WARN: "warning",
    Severity.ERROR: "bad",
    Severity.CRITICAL: "critical",
}
TONE_COLOURS: dict[Tone, str] = {
    "neutral": "#1D9BD1",
    "good": "#2EB67D",
    "warning": "#ECB22E",
    "bad": "#E01E5A",
    "critical": "#8B0000",
}


# The fact that carries an alert's signed ack URL (docs/notifications.md): each channel also
# makes it clickable its own way (a Slack link, a Teams action, the Discord embed's title).
ACK_LINK_FIELD = "Acknowledge link"


def ack_link(event: Event) -> str | None:
    return event.fields.get(ACK_LINK_FIELD) or None


@dataclass(frozen=True)
class Fact:
    label: str
    value: str


def label(event: Event) -> str:
    if event.phase in _PHASE_LABELS:
        return _PHASE_LABELS[event.phase]
    return _KIND_LABELS[event.kind]


def headline(event: Event) -> str:
    """One line naming severity, environment and what happened (the e-mail subject's core)."""
    if event.subject:
        return event.subject
    text = f"[{event.severity.name}] {event.env}: {label(event)}"
    return f"{text} {event.version}" if event.version else text


def tone(event: Event) -> Tone:
    """The kind's tone, raised to the severity's when that is more alarming."""
    return max(_KIND_TONES[event.kind], _SEVERITY_TONES[event.severity], key=_TONE_ORDER.index)


def colour(event: Event) -> str:
    return TONE_COLOURS[tone(event)]


def facts(event: Event) -> list[Fact]:
    pairs = [
        ("Environment", event.env),
        ("Version", event.version),
        ("Initiator", event.initiator),
        ("Trigger", event.trigger),
        ("Reason", event.reason),
        ("Severity", event.severity.name),
    ]
    found = [Fact(name, value) for name, value in pairs if value]
    found.extend(Fact(name, value) for name, value in event.fields.items() if value)
    return found


def plain_text(event: Event) -> str:
    """The message and its facts as plain text, for e-mail bodies."""
    lines = [headline(event), "", event.message, ""]
    width = max((len(f.label) for f in facts(event)), default=0)
    lines.extend(f"{f.label.ljust(width)}  {f.value}" for f in facts(event))
    lines.extend(["", f"Notification key: {event.dedupe_key}"])
    return "\n".join(lines) + "\n"


def truncate(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut with an ellipsis."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def single_line(text: str) -> str:
    """Collapse line breaks and control characters to spaces (for titles built from data)."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())
