"""What a notification says: its kind, severity and facts, independent of any channel.

An :class:`Event` is validated once, here, so every channel can trust it: identifiers and an
explicit subject are single-line (a CR/LF in an e-mail subject is header injection), and the
idempotency key names the *occurrence*: the caller's key, else the run id and phase (a re-run of
the same run posts once, a second incident with the same words is a second notice), and only
for a caller that names neither, a digest of the content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from dhash_service.errors import ConfigError

KINDS = ("deploy", "success", "failure", "rollback", "info", "backup", "gate")
MAX_MESSAGE_CHARS = 20_000
_MAX_FIELDS = 20


class Severity(IntEnum):
    """The guide's alert levels; the values line up with :mod:`logging` levels."""

    INFO = 20
    WARN = 30
    ERROR = 40
    CRITICAL = 50

    @classmethod
    def parse(cls, text: str) -> Severity:
        name = text.strip().upper()
        name = "WARN" if name == "WARNING" else name
        try:
            return cls[name]
        except KeyError:
            known = ", ".join(s.name for s in cls)
            raise ConfigError(f"unknown severity {text!r}; known: {known}") from None


# What a kind means when the caller does not say: the guide's "Alert Levels" section.
DEFAULT_SEVERITY: Mapping[str, Severity] = {
    "deploy": Severity.INFO,
    "success": Severity.INFO,
    "info": Severity.INFO,
    "backup": Severity.INFO,
    "gate": Severity.WARN,
    "failure": Severity.ERROR,
    "rollback": Severity.ERROR,
}


# Everything str.splitlines() treats as a line end: CR, LF, VT, FF, FS, GS, RS, NEL, LS, PS.
_LINE_BREAKS = frozenset("\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


def has_line_break(text: str) -> bool:
    """True when ``text`` holds any character that ends a line (CR, LF, NEL, U+2028...)."""
    return any(c in _LINE_BREAKS for c in text)


def _require_single_line(name: str, value: str | None) -> None:
    if value is None:
        return
    if has_line_break(value) or any(ord(c) < 32 and c != "\t" for c in value):
        raise ConfigError(f"{name} must be a single line without control characters (CR/LF)")


_SINGLE_LINE = (
    *("env", "version", "initiator", "trigger", "phase", "key", "subject", "run_id", "resolves"),
)
# Added after content keys were first stored: left out of the digest so old keys still match.
_NOT_DIGESTED = ("key", "run_id", "resolves")
MAX_FIELDS = _MAX_FIELDS


@dataclass(frozen=True)
class Event:
    """One thing to tell people about. ``key`` is the idempotency key (derived when omitted)."""

    kind: str
    env: str
    message: str
    severity: Severity = Severity.INFO
    version: str | None = None
    initiator: str | None = None
    reason: str | None = None
    trigger: str | None = None
    phase: str | None = None
    fields: Mapping[str, str] = field(default_factory=dict)
    key: str | None = None
    subject: str | None = None
    run_id: str | None = None
    resolves: str | None = None  # the alert (id, notice key or run id) this notice closes

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown notification type {self.kind!r}; known: {', '.join(KINDS)}")
        given: object = self.severity  # callers may pass "WARN" as well as Severity.WARN
        if not isinstance(given, Severity):
            object.__setattr__(self, "severity", Severity.parse(str(given)))
        if not self.env.strip():
            raise ConfigError("a notification needs an environment name")
        if not self.message.strip():
            raise ConfigError("a notification needs a non-empty message")
        if len(self.message) > MAX_MESSAGE_CHARS:  # a huge error text must not fail the caller
            object.__setattr__(self, "message", self.message[: MAX_MESSAGE_CHARS - 1] + "…")
        for name in _SINGLE_LINE:
            _require_single_line(name, getattr(self, name))
        if len(self.fields) > _MAX_FIELDS:
            raise ConfigError(f"at most {_MAX_FIELDS} extra fields per notification")
        for name, value in self.fields.items():
            if not isinstance(name, str) or not isinstance(value, str) or not name.strip():
                raise ConfigError("notification fields map non-empty names to strings")
            _require_single_line(f"field name {name!r}", name)
        object.__setattr__(self, "fields", dict(self.fields))

    @property
    def dedupe_key(self) -> str:
        """The caller's key, else ``run_id:phase`` (the occurrence), else a content digest."""
        if self.key:
            return self.key
        if self.run_id:
            return f"{self.run_id}:{self.phase or self.kind}"
        content = self.to_dict()
        for name in _NOT_DIGESTED:
            content.pop(name)
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode("utf-8")).hexdigest()
        return f"evt-{digest[:24]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "env": self.env,
            "message": self.message,
            "severity": self.severity.name,
            "version": self.version,
            "initiator": self.initiator,
            "reason": self.reason,
            "trigger": self.trigger,
            "phase": self.phase,
            "fields": dict(self.fields),
            "key": self.key,
            "subject": self.subject,
            "run_id": self.run_id,
            "resolves": self.resolves,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """Rebuild an event stored in the outbox (validated again on the way in)."""
        values = dict(data)
        values["severity"] = Severity.parse(str(values.get("severity", "INFO")))
        values["fields"] = dict(values.get("fields") or {})
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})
