"""Build a :class:`Notifier` from settings: which channels, their endpoints, their floors.

Sources, most specific first: explicit ``channels`` → the environment's ``channels`` in
``dhash-environments.toml``; endpoints and knobs from :class:`NotificationSettings`; per-channel
minimum severity from ``DHASH_NOTIFY_MIN_SEVERITY_<CHANNEL>``, else the environment's
``notify_min_severity`` table, else INFO.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from dhash_rollout.environments import Environment, environments_file, load_environment
from dhash_service.config import NotificationSettings, Settings
from dhash_service.errors import ConfigError
from dhash_service.logs import get_logger

from . import discord, mail, slack, teams
from .ack_link import AckLinks, check_base_url, check_secret
from .channel import Channel
from .discord import DiscordChannel
from .escalation_config import EscalationConfig, escalation_of
from .escalator import Escalator
from .file_channel import FileChannel
from .file_log import NotificationLog
from .model import Event, Severity
from .notifier import Notifier, Unavailable
from .redaction import redact, register_secrets
from .retry import RetryPolicy
from .slack import SlackChannel
from .teams import TeamsChannel
from .webhook import check_webhook_url

ALL_CHANNELS = ("slack", "teams", "discord", "email", "file")
WEBHOOK_CHANNELS = ("slack", "teams", "discord")

_log = get_logger("dhash.notify")


def parse_channels(text: str) -> list[str]:
    """``"slack, teams,email"`` → ``["slack", "teams", "email"]``; unknown names refused."""
    names = list(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in ALL_CHANNELS]
    if unknown:
        raise ConfigError(
            f"unknown channel(s) {', '.join(unknown)}; known: {', '.join(ALL_CHANNELS)}"
        )
    if not names:
        raise ConfigError("--channels names no channel")
    return names


def notifier_from_settings(
    env_name: str,
    channels: Sequence[str] | None = None,
    log_dir: Path | None = None,
    *,
    strict: bool = False,
) -> Notifier:
    """A notifier from the environment's channels and the notification settings.

    Lenient by default: a missing or bad setting makes that channel ``not-configured``
    instead of raising. ``strict=True`` (the CLI) raises ``ConfigError`` for bad values.
    """
    return build_notifier(env_name, channels, log_dir, strict=strict)


def build_notifier(
    env_name: str,
    channels: Sequence[str] | None,
    log_dir: Path | None,
    *,
    strict: bool,
) -> Notifier:
    settings = _load(Settings, strict)
    notification = _load(NotificationSettings, strict)
    environment = _environment(env_name)
    log_dir = log_dir or (settings.log_dir if settings else Path("logs"))
    names = list(channels) if channels is not None else list(environment.channels or ("file",))

    policy = RetryPolicy()
    total_seconds, dedupe_seconds = 25.0, 86400.0
    if notification is not None:
        register_secrets(_configured_secrets(notification))
        policy = RetryPolicy(
            max_attempts=notification.max_attempts,
            backoff_initial_seconds=notification.backoff_initial_seconds,
            backoff_max_seconds=notification.backoff_max_seconds,
            connect_timeout_seconds=notification.connect_timeout_seconds,
            read_timeout_seconds=notification.read_timeout_seconds,
        )
        total_seconds, dedupe_seconds = notification.total_seconds, notification.dedupe_seconds

    log = NotificationLog(log_dir)
    built: dict[str, Channel | Unavailable] = {}
    for name in names:
        if name == "file":
            built[name] = FileChannel(log)
        elif name not in ALL_CHANNELS:
            built[name] = Unavailable(name, f"unknown channel {name!r}", misconfigured=True)
        elif notification is None:
            built[name] = Unavailable(name, "notification settings are invalid", True)
        else:
            built[name] = _build_remote(name, notification, policy)
    if strict:
        bad = [c for c in built.values() if isinstance(c, Unavailable) and c.misconfigured]
        if bad:
            raise ConfigError("; ".join(f"{c.name}: {c.reason}" for c in bad))

    notifier = Notifier(
        built,
        log_dir=log_dir,
        policy=policy,
        total_seconds=total_seconds,
        dedupe_seconds=dedupe_seconds,
        min_severity=_min_severities(notification, environment, strict),
        env_name=environment.name,
        log=log,
        escalation=_escalator(
            notification,
            policy,
            log_dir,
            (total_seconds, dedupe_seconds),
            links=ack_links(notification, strict),
        ),
    )
    return notifier


def build_escalator(log_dir: Path | None = None, *, strict: bool = True) -> Escalator:
    """The escalator on the configured settings: ``dhash notify escalate`` and the monitor's
    polls (``build_escalator().escalate_due(now=...)``)."""
    # The escalator serves every environment (each alert names its own); the notifier built
    # around it only carries the settings, so its environment name is a label.
    escalator = build_notifier("escalation", ["file"], log_dir, strict=strict).escalation
    assert isinstance(escalator, Escalator)
    return escalator


def _escalator(
    ns: NotificationSettings | None,
    policy: RetryPolicy,
    log_dir: Path,
    budgets: tuple[float, float],  # the notifier's total_seconds and dedupe_seconds
    *,
    links: AckLinks | None,
) -> Escalator:
    def build(name: str, overrides: Mapping[str, Any]) -> Channel | Unavailable:
        if ns is None:
            return Unavailable(name, "notification settings are invalid", True)
        return _build_remote(name, ns.model_copy(update=dict(overrides)), policy)

    return Escalator(
        log_dir=log_dir,
        build=build,
        config_for=environment_escalation,
        policy=policy,
        total_seconds=budgets[0],
        dedupe_seconds=budgets[1],
        links=links,
    )


def ack_secret(ns: NotificationSettings | None) -> str | None:
    """The key that signs and checks ack links, or None (unset or unusable)."""
    secret = ns.ack_secret.get_secret_value().strip() if ns and ns.ack_secret else None
    return secret if secret and check_secret(secret) is None else None


def ack_secrets(ns: NotificationSettings | None) -> tuple[str, ...]:
    """The keys that check ack links: the current one, then the previous one (a rotation:
    links sent before it keep working until they expire)."""
    current = ack_secret(ns)
    if current is None or ns is None:
        return ()
    old = ns.ack_secret_previous.get_secret_value().strip() if ns.ack_secret_previous else None
    return (current, old) if old and check_secret(old) is None else (current,)


def ack_links(ns: NotificationSettings | None, strict: bool) -> AckLinks | None:
    """Ack links for the pages, when ``DHASH_NOTIFY_ACK_URL`` and a usable secret are set.
    A URL without a usable secret, or a bad URL, is a configuration error (``strict``) or a
    warning: the pages then name ``dhash notify ack`` only."""
    if ns is None:
        return None
    problems = []
    raw = ns.ack_secret.get_secret_value() if ns.ack_secret else None
    if raw is not None and (why := check_secret(raw)):
        problems.append(f"DHASH_NOTIFY_ACK_SECRET {why}")
    old = ns.ack_secret_previous.get_secret_value() if ns.ack_secret_previous else None
    if old is not None and (why := check_secret(old)):
        problems.append(f"DHASH_NOTIFY_ACK_SECRET_PREVIOUS {why}")
    if old is not None and raw is None:
        problems.append(
            "DHASH_NOTIFY_ACK_SECRET_PREVIOUS is set but DHASH_NOTIFY_ACK_SECRET is not"
        )
    if ns.ack_url is not None:
        if raw is None:
            problems.append("DHASH_NOTIFY_ACK_URL is set but DHASH_NOTIFY_ACK_SECRET is not")
        if why := check_base_url(ns.ack_url.strip()):
            problems.append(f"DHASH_NOTIFY_ACK_URL {why}")
    if problems:
        if strict:
            raise ConfigError("; ".join(problems))
        _log.warning("notify.ack_links_unusable", error="; ".join(problems))
        return None
    secret = ack_secret(ns)
    if ns.ack_url is None or secret is None:
        return None
    return AckLinks(ns.ack_url.strip(), secret, ns.ack_link_hours * 3600.0)


def environment_escalation(env_name: str) -> EscalationConfig | None:
    """``[ENV.escalation]`` of the environments file, validated (None: no paging)."""
    environment = load_environment(env_name)
    return escalation_of(environment.extra, f"{environments_file()}: [{env_name}] escalation")


def _build_remote(
    name: str, ns: NotificationSettings, policy: RetryPolicy
) -> Channel | Unavailable:
    if name in WEBHOOK_CHANNELS:
        return _build_webhook(name, ns, policy)
    return _build_email(ns, policy)


_WEBHOOKS: Mapping[str, tuple[str, Callable[[Event], dict[str, Any]]]] = {
    "slack": ("SLACK_WEBHOOK_URL", slack.render_payload),
    "teams": ("TEAMS_WEBHOOK_URL", teams.render_payload),
    "discord": ("DISCORD_WEBHOOK_URL", discord.render_payload),
}


def _build_webhook(
    name: str, ns: NotificationSettings, policy: RetryPolicy
) -> Channel | Unavailable:
    variable, renderer = _WEBHOOKS[name]
    secret = getattr(ns, f"{name}_webhook_url")
    if secret is None:
        return Unavailable(name, f"{variable} is not set", render=renderer)
    url = secret.get_secret_value().strip()
    problem = check_webhook_url(url)
    if problem:
        return Unavailable(name, f"{variable} {problem}", misconfigured=True, render=renderer)
    if name == "slack":
        return SlackChannel(url, policy)
    if name == "teams":
        return TeamsChannel(url, policy)
    return DiscordChannel(url, policy)


def _build_email(ns: NotificationSettings, policy: RetryPolicy) -> Channel | Unavailable:
    sender = ns.smtp_from or "dhash@localhost"
    recipients = tuple(ns.smtp_to)

    def preview(event: Event) -> dict[str, Any]:
        safe_to = tuple(r for r in recipients if not mail.check_address(r))
        return mail.render_payload(event, sender if not mail.check_address(sender) else "", safe_to)

    missing = [
        var
        for var, value in (("SMTP_HOST", ns.smtp_host), ("SMTP_FROM", ns.smtp_from))
        if not value
    ]
    if not recipients:
        missing.append("SMTP_TO")
    problems = [
        f"SMTP_FROM {why}" for why in [mail.check_address(ns.smtp_from or "x@y")] if why
    ] + [
        f"SMTP_TO address {i + 1} {why}"
        for i, r in enumerate(recipients)
        if (why := mail.check_address(r))
    ]
    password = ns.smtp_password.get_secret_value() if ns.smtp_password else None
    if password and not ns.smtp_user:
        problems.append("SMTP_PASSWORD is set but SMTP_USER is not")
    if ns.smtp_user and not password:
        problems.append("SMTP_USER is set but SMTP_PASSWORD is not")
    if password and ns.smtp_security == "none":
        problems.append(
            "refusing to send SMTP_PASSWORD without TLS; set SMTP_SECURITY=starttls or ssl"
        )
    if problems:
        return Unavailable("email", "; ".join(problems), misconfigured=True, render=preview)
    if missing:
        return Unavailable("email", f"{', '.join(missing)} not set", render=preview)
    try:
        tls = ssl.create_default_context(cafile=str(ns.smtp_ca_file) if ns.smtp_ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        return Unavailable(
            "email", f"DHASH_NOTIFY_SMTP_CA_FILE unusable: {redact(str(exc))}", True, preview
        )
    assert ns.smtp_host is not None and ns.smtp_from is not None
    return mail.EmailChannel(
        host=ns.smtp_host,
        port=ns.smtp_port or mail.DEFAULT_PORTS[ns.smtp_security],
        security=ns.smtp_security,
        sender=ns.smtp_from,
        recipients=recipients,
        policy=policy,
        user=ns.smtp_user,
        password=password,
        tls=tls,
    )


def _min_severities(
    ns: NotificationSettings | None, environment: Environment, strict: bool
) -> dict[str, Severity]:
    table = environment.settings.notify_min_severity
    floors: dict[str, Severity] = {}
    for name in ("slack", "teams", "discord", "email"):
        explicit = getattr(ns, f"min_severity_{name}", None) if ns else None
        raw = explicit or table.get(name)
        if raw is None:
            continue
        try:
            floors[name] = Severity.parse(str(raw))
        except ConfigError:
            if strict:
                raise
            _log.warning("notify.bad_min_severity", channel=name)
    return floors


def _configured_secrets(ns: NotificationSettings) -> list[str]:
    values = [
        ns.slack_webhook_url,
        ns.teams_webhook_url,
        ns.discord_webhook_url,
        ns.smtp_password,
        ns.ack_secret,
        ns.ack_secret_previous,
    ]
    return [v.get_secret_value() for v in values if v is not None]


_SettingsT = TypeVar("_SettingsT", Settings, NotificationSettings)


def _load(cls: type[_SettingsT], strict: bool) -> _SettingsT | None:
    try:
        return cls()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        message = redact(f"invalid {cls.__name__}: {problems}")
        if strict:
            raise ConfigError(message) from None
        _log.warning("notify.invalid_settings", error=message)
        return None


def _environment(name: str) -> Environment:
    """The environment's notification defaults; an unknown name only labels the message (the
    CLI refuses an unknown ``--env`` before it gets here)."""
    try:
        return load_environment(name)
    except ConfigError as exc:
        _log.debug("notify.environment_defaults", env=name, error=exc.message)
        return Environment(name=name, root=Path(), port=0, url="", database_url="")
