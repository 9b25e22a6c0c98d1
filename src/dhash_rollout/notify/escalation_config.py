"""The escalation matrix of an environment, as the ``[ENV.escalation]`` table describes it.

Who is paged at each level (a channel and its target: a Slack mention or channel, a Teams or
Discord webhook, e-mail addresses) and after how many minutes, which severities escalate, and
where a CRITICAL starts. Validated once, with pydantic, so a typo in the file (an unknown key, a
level paged before the one below it, a bad address) is refused when the environment loads, not
at 3 AM when the first page is due. Without a ``levels`` list the guide's matrix applies::

    [production.escalation]
    severities = ["ERROR", "CRITICAL"]
    critical_starts_at = "L2"

    [[production.escalation.levels]]
    name = "L1"
    after_minutes = 0
    contacts = [{ channel = "slack", to = "<!subteam^S0ONCALL|@oncall-dhash>" }]
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dhash_service.errors import ConfigError

from .mail import check_address
from .model import Severity, has_line_break
from .webhook import check_webhook_url

# A Slack target: a channel (#name) or a mention: @name (shown, pings nobody), or Slack's own
# syntax that does ping: <@U…> (a user), <!subteam^S…|@name> (a user group), <!here>.
_SLACK_TARGET = re.compile(
    r"^(#[\w.-]{1,80}|@[\w.-]{1,80}|<(@|!subteam\^)[A-Z0-9]+(\|@?[\w.-]+)?>|<!here>|<!channel>)$"
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _webhook(url: str | None) -> str | None:
    if url is not None and (problem := check_webhook_url(url)):
        raise ValueError(f"webhook_url {problem}")
    return url


class SlackContact(_Strict):
    """A Slack mention or channel, through ``webhook_url`` or else ``SLACK_WEBHOOK_URL``."""

    channel: Literal["slack"]
    to: str
    webhook_url: str | None = None

    @field_validator("to")
    @classmethod
    def _target(cls, value: str) -> str:
        if not _SLACK_TARGET.match(value):
            raise ValueError(
                "must be a #channel, an @name, or a Slack mention such as <@U012AB3CD> or "
                "<!subteam^S012AB3CD|@oncall-dhash>"
            )
        return value

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _webhook(value)

    @property
    def mention(self) -> str | None:
        return None if self.to.startswith("#") else self.to

    @property
    def room(self) -> str | None:
        return self.to if self.to.startswith("#") else None


class WebhookContact(_Strict):
    """A Teams or Discord webhook (its own ``webhook_url``, else the configured one)."""

    channel: Literal["teams", "discord"]
    webhook_url: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _webhook(value)


class EmailContact(_Strict):
    """E-mail addresses, sent through the configured SMTP server."""

    channel: Literal["email"]
    to: list[str] = Field(min_length=1)

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if problem := check_address(address):
                raise ValueError(f"{address!r} {problem}")
        return value


Contact = Annotated[SlackContact | WebhookContact | EmailContact, Field(discriminator="channel")]


class Level(_Strict):
    """One step of the matrix: these contacts, once the alert is this old and unacknowledged."""

    name: str = Field(min_length=1, max_length=32)
    after_minutes: float = Field(ge=0, le=7 * 24 * 60)
    contacts: list[Contact] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _single_line(cls, value: str) -> str:
        if has_line_break(value) or not value.strip():
            raise ValueError("must be a non-empty single line")
        return value


def _guide_matrix() -> list[Level]:
    """The operations guide's matrix and contact points (its L3 names no CTO address)."""
    return [
        Level(
            name="L1",
            after_minutes=0,
            contacts=[SlackContact(channel="slack", to="@oncall-dhash")],
        ),
        Level(
            name="L2",
            after_minutes=15,
            contacts=[
                SlackContact(channel="slack", to="@oncall-backup"),
                EmailContact(channel="email", to=["ops-manager@company.com"]),
            ],
        ),
        Level(
            name="L3",
            after_minutes=30,
            contacts=[EmailContact(channel="email", to=["eng-director@company.com"])],
        ),
    ]


SeverityName = Literal["INFO", "WARN", "ERROR", "CRITICAL"]


def _escalating() -> list[SeverityName]:
    return ["ERROR", "CRITICAL"]


class EscalationConfig(_Strict):
    """``[ENV.escalation]``: the levels in paging order and which severities climb them."""

    enabled: bool = True
    severities: list[SeverityName] = Field(default_factory=_escalating, min_length=1)
    critical_starts_at: str | None = None
    levels: list[Level] = Field(default_factory=_guide_matrix, min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> EscalationConfig:
        names = [level.name for level in self.levels]
        if len(set(names)) != len(names):
            raise ValueError(f"level names must be unique, got {names}")
        minutes = [level.after_minutes for level in self.levels]
        if any(b <= a for a, b in itertools.pairwise(minutes)):
            raise ValueError(f"after_minutes must increase from level to level, got {minutes}")
        if self.critical_starts_at is not None and self.critical_starts_at not in names:
            raise ValueError(
                f"critical_starts_at {self.critical_starts_at!r} is not one of {names}"
            )
        return self

    def escalates(self, severity: Severity) -> bool:
        return self.enabled and severity.name in self.severities

    def start_index(self, severity: Severity) -> int:
        """Where this severity enters the matrix (CRITICAL may skip straight to L2)."""
        if severity is Severity.CRITICAL and self.critical_starts_at is not None:
            return [level.name for level in self.levels].index(self.critical_starts_at)
        return 0

    def after_seconds(self) -> tuple[float, ...]:
        return tuple(level.after_minutes * 60.0 for level in self.levels)


def parse_escalation(raw: object, where: str) -> EscalationConfig:
    """The validated table, or a :class:`ConfigError` naming each bad key under ``where``."""
    try:
        return EscalationConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{where}.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            if err["loc"]
            else f"{where}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(problems) from None


def escalation_of(extra: Mapping[str, object], where: str) -> EscalationConfig | None:
    """The environment's escalation, or None when it has no ``escalation`` table (no paging)."""
    raw = extra.get("escalation")
    if raw is None:
        return None
    config = parse_escalation(raw, where)
    return config if config.enabled else None
