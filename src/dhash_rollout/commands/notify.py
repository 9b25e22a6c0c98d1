"""``dhash notify``, ``dhash notify flush`` and ``dhash deploy-notify``.

Thin: parse and validate the options (bad values exit 2), build an :class:`Event`, hand it to
the :class:`Notifier` and print what happened per channel. Delivery failures exit 0: the
message is outboxed and logged, and a notification never fails the step that sent it.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING

import typer

from dhash_rollout.commands import log_to_stderr
from dhash_service.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from dhash_rollout.environments import Environment
    from dhash_rollout.notify import DeliveryReport, FlushReport, Notifier, Severity
    from dhash_rollout.notify.escalator import Escalator, SentNotice


class NotifyType(StrEnum):
    deploy = "deploy"
    success = "success"
    failure = "failure"
    rollback = "rollback"
    info = "info"


class Phase(StrEnum):
    start = "start"
    success = "success"
    failure = "failure"
    rollback = "rollback"


class Trigger(StrEnum):
    manual = "manual"
    automatic = "automatic"


_PHASE_KINDS = {
    "start": "deploy",
    "success": "success",
    "failure": "failure",
    "rollback": "rollback",
}

EnvOption = typer.Option(
    None, "--env", help="Environment the message is about (default: DHASH_ENV)."
)
ChannelsOption = typer.Option(
    None,
    "--channels",
    help="Comma-separated: slack,teams,discord,email,file (default: the environment's channels).",
)
SeverityOption = typer.Option(
    None, "--severity", help="INFO, WARN, ERROR or CRITICAL (default: by type or phase)."
)
KeyOption = typer.Option(
    None, "--key", help="Idempotency key: the same key is posted once (default: --run-id:phase)."
)
ResolvesOption = typer.Option(
    None,
    "--resolves",
    help="Close the open alerts of this alert id, notice key or run id once this is sent.",
)
RunIdOption = typer.Option(
    None,
    "--run-id",
    envvar="DHASH_RUN_ID",
    help="The run this notice belongs to: a re-run with the same run id and phase posts once "
    "(default: a new id per invocation, so a second incident with the same text is sent).",
)
FieldOption = typer.Option(None, "--field", help="Extra fact NAME=VALUE (repeatable).")
DryRunOption = typer.Option(
    False, "--dry-run", help="Render every channel's payload and send nothing."
)
JsonOption = typer.Option(False, "--json", help="Print the report as JSON.")

notify_app = typer.Typer(
    help="Send a notification to Slack, Teams, Discord, e-mail and the notification log.",
    no_args_is_help=False,
    add_completion=False,
)


@notify_app.callback(invoke_without_command=True)
def notify(
    ctx: typer.Context,
    *,
    kind: NotifyType | None = typer.Option(None, "--type", help="What happened."),
    env: str | None = EnvOption,
    message: str | None = typer.Option(None, "--message", help="The message text."),
    channels: str | None = ChannelsOption,
    severity: str | None = SeverityOption,
    subject: str | None = typer.Option(
        None, "--subject", help="Title / e-mail subject (single line; default: derived)."
    ),
    key: str | None = KeyOption,
    run_id: str | None = RunIdOption,
    resolves: str | None = ResolvesOption,
    fields: list[str] | None = FieldOption,
    dry_run: bool = DryRunOption,
    as_json: bool = JsonOption,
) -> None:
    """Send one notification: dhash notify --type deploy --message "..." [--dry-run].

    `dhash notify flush` re-sends what the outbox holds.
    """
    if ctx.invoked_subcommand is not None:
        if kind or message:
            raise typer.BadParameter("--type/--message cannot be combined with a subcommand")
        return
    if kind is None or message is None:
        raise typer.BadParameter("--type and --message are required (or use `notify flush`)")
    from dhash_rollout.notify import Event
    from dhash_rollout.notify.model import DEFAULT_SEVERITY

    env_name, _ = _environment(env)
    event = Event(
        kind=kind.value,
        env=env_name,
        message=message,
        severity=_severity(severity) or DEFAULT_SEVERITY[kind.value],
        subject=subject,
        fields=_fields(fields),
        key=key,
        run_id=_occurrence(key, run_id),
        resolves=resolves,
    )
    report = _notifier(env_name, channels).send(event, dry_run=dry_run)
    _show(report, as_json)


@notify_app.command("flush")
def flush(
    limit: int | None = typer.Option(None, "--limit", min=1, help="Re-send at most N messages."),
    timeout: float | None = typer.Option(
        None, "--timeout", min=0.1, help="Seconds for the whole flush (default: the budget)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the outbox, send nothing."),
    as_json: bool = JsonOption,
) -> None:
    """Re-send outboxed notifications, oldest first."""
    from dhash_rollout.notify import notifier_from_settings
    from dhash_rollout.notify.factory import ALL_CHANNELS
    from dhash_service.config import Settings

    log_to_stderr()
    notifier = notifier_from_settings(Settings().env, channels=list(ALL_CHANNELS))
    escalator = _escalator()  # escalation pages wait in the same outbox, under their contacts
    notifier.channels.update(
        escalator.contact_channels({str(i.event.get("env")) for i in notifier.outbox()})
    )
    report = notifier.flush(limit=limit, timeout=timeout, dry_run=dry_run)
    _show_flush(report, as_json)


@notify_app.command("ack")
def ack(
    alert_id: str = typer.Argument(..., help="The alert id the notice names (e.g. A1B2C3)."),
    by: str | None = typer.Option(None, "--by", help="Who acknowledges (default: $USER)."),
    as_json: bool = JsonOption,
) -> None:
    """Acknowledge an alert: no further levels are paged; those already paged are told once."""
    import getpass

    who = by or getpass.getuser()
    if not who.strip() or any(c in who for c in "\r\n"):
        raise ConfigError("--by must be a non-empty single line")
    escalator = _escalator()
    alert, changed, run = escalator.ack(alert_id, who)
    if as_json:
        typer.echo(json.dumps({"alert": alert.id, "acknowledged_now": changed, **run.to_dict()}))
        return
    if changed:
        typer.echo(f"alert {alert.id} acknowledged by {who}: no further levels will be paged")
    elif alert.acked_at is not None:
        typer.echo(f"alert {alert.id} was already acknowledged by {alert.acked_by}")
    else:
        typer.echo(f"alert {alert.id} is already resolved")
    _show_sent(run.sent)
    _warn_problems(escalator)  # the ack holds; whoever was not told is named


@notify_app.command("ack-server")
def ack_server(
    listen: str = typer.Option(
        "127.0.0.1:8089",
        "--listen",
        help="HOST:PORT to listen on (put it behind your TLS proxy at DHASH_NOTIFY_ACK_URL).",
    ),
) -> None:
    """Serve the ack links of escalation pages: GET shows a confirm page, POST acknowledges."""
    from dhash_rollout.notify.ack_server import ack_app, serve
    from dhash_rollout.notify.factory import ack_links, ack_secrets, build_escalator
    from dhash_service.config import NotificationSettings

    host, sep, port_text = listen.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"--listen wants HOST:PORT, got {listen!r}")
    settings = NotificationSettings()
    links = ack_links(settings, strict=True)  # a broken URL or secret: exit 2 naming it
    secrets = ack_secrets(settings)
    if not secrets:
        raise ConfigError("DHASH_NOTIFY_ACK_SECRET is not set: it signs and checks the ack links")
    log_to_stderr()
    build_escalator(strict=True)  # the store and settings are usable before we listen
    typer.echo(f"dhash ack listener on http://{host}:{port_text}/ack/<token>")
    if links is None:
        typer.echo("note: DHASH_NOTIFY_ACK_URL is not set, so pages carry no ack link yet")
    serve(ack_app(lambda: build_escalator(strict=False), secrets), host, int(port_text))


@notify_app.command("escalate")
def escalate(as_json: bool = JsonOption) -> None:
    """Page every level that is due (idempotent: run it every minute from cron or a timer)."""
    escalator = _escalator()
    run = escalator.escalate_due()
    if as_json:
        payload = {**run.to_dict(), "problems": escalator.problems}
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
    else:
        _show_sent(run.sent)
        if run.flushed and run.flushed.items:
            _show_flush(run.flushed, False)
        if not run.sent and not (run.flushed and run.flushed.items):
            typer.echo("nothing due")
    if _warn_problems(escalator):
        raise typer.Exit(2)  # alerts of that environment cannot climb: cron mail must say so


@notify_app.command("resolve")
def resolve(
    ref: str = typer.Argument(..., help="An alert id, a notice key or the run id that raised it."),
    by: str | None = typer.Option(None, "--by", help="Who resolves it (default: $USER)."),
    as_json: bool = JsonOption,
) -> None:
    """Close the alerts of REF: no further paging; the levels already paged are told."""
    import getpass

    closed = _escalator().resolve(ref, by or getpass.getuser())
    if as_json:
        typer.echo(json.dumps({"resolved": [a.id for a in closed]}))
        return
    typer.echo(f"resolved: {', '.join(a.id for a in closed)}" if closed else f"no open alert {ref}")


@notify_app.command("status")
def status(
    show_all: bool = typer.Option(False, "--all", help="Resolved ones too."),
    as_json: bool = JsonOption,
) -> None:
    """Unresolved alerts: their level, who was paged and when, acknowledgements."""
    escalator = _escalator()
    found = escalator.status(include_resolved=show_all)
    if as_json:
        typer.echo(json.dumps([a.to_dict() for a in found], indent=2, ensure_ascii=False))
        return
    _warn_problems(escalator)
    if not found:
        typer.echo("no open alerts" if not show_all else "no alerts")
        return
    for item in found:
        d = item.to_dict()
        typer.echo(
            f"{d['id']}  {d['state']:<12} {d['severity']:<8} {d['env']}  opened {d['opened_at']}"
            f"  level {d['level'] or '-'}"
        )
        typer.echo(f"    {str(d['message']).splitlines()[0]}")
        for n in d["notices"]:
            to = ", ".join(f"{c} ({st})" for c, st in n["contacts"].items()) or "(sending)"
            typer.echo(f"    {n['label']:<12} {n['sent_at'] or n['claimed_at']}  {to}")
        if d["acked_by"]:
            via = f" through {d['acked_via']}" if d["acked_via"] else ""
            typer.echo(f"    acknowledged by {d['acked_by']} at {d['acked_at']}{via}")
        if d["resolved_by"]:
            typer.echo(f"    resolved by {d['resolved_by']} at {d['resolved_at']}")
        if d["next_level"] is not None:
            typer.echo(f"    next: {d['next_level']} in {int(d['next_in_seconds'] // 60)} min")
        if not d["escalation_configured"]:
            typer.echo(f"    no [{d['env']}.escalation] configured: not paging")
        if d["state"] == "open":
            typer.echo(f"    acknowledge: dhash notify ack {d['id']}")


def deploy_notify(
    *,
    phase: Phase = typer.Option(..., "--phase", help="Deployment phase."),
    env: str | None = EnvOption,
    version: str | None = typer.Option(
        None, "--version", help="Release version (default: the active release, or 'unknown')."
    ),
    initiator: str | None = typer.Option(None, "--initiator", help="Who started it."),
    reason: str | None = typer.Option(None, "--reason", help="Why (failures, rollbacks)."),
    trigger: Trigger | None = typer.Option(None, "--trigger", help="manual or automatic."),
    message: str | None = typer.Option(None, "--message", help="Override the message text."),
    channels: str | None = ChannelsOption,
    severity: str | None = SeverityOption,
    key: str | None = KeyOption,
    run_id: str | None = RunIdOption,
    resolves: str | None = ResolvesOption,
    dry_run: bool = DryRunOption,
    as_json: bool = JsonOption,
) -> None:
    """Announce a deployment phase: start, success, failure or rollback."""
    from dhash_rollout.notify import Event
    from dhash_rollout.notify.model import DEFAULT_SEVERITY

    env_name, environment = _environment(env)
    kind = _PHASE_KINDS[phase.value]
    version = version or _active_version(environment)
    event = Event(
        kind=kind,
        env=env_name,
        message=message or _phase_message(phase.value, env_name, version, initiator, reason),
        severity=_severity(severity) or DEFAULT_SEVERITY[kind],
        version=version,
        initiator=initiator,
        reason=reason,
        trigger=trigger.value if trigger else None,
        phase=phase.value,
        key=key,
        run_id=_occurrence(key, run_id),
        resolves=resolves,
    )
    report = _notifier(env_name, channels).send(event, dry_run=dry_run)
    _show(report, as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(notify_app, name="notify")
    app.command("deploy-notify")(deploy_notify)


# --- helpers ----------------------------------------------------------------------------------


def _environment(env: str | None) -> tuple[str, Environment | None]:
    """An explicit ``--env`` must be a known environment; the default only labels the message."""
    from dhash_rollout.environments import load_environment
    from dhash_service.config import Settings

    if env is not None:
        return env, load_environment(env)
    name = Settings().env
    try:
        return name, load_environment(name)
    except ConfigError:
        return name, None


def _notifier(env_name: str, channels: str | None) -> Notifier:
    from dhash_rollout.notify import notifier_from_settings
    from dhash_rollout.notify.factory import parse_channels

    names = parse_channels(channels) if channels is not None else None
    log_to_stderr()  # after every argument is checked: usage errors log nothing
    return notifier_from_settings(env_name, channels=names, strict=True)


def _escalator(*, strict: bool = True) -> Escalator:
    from dhash_rollout.notify.factory import build_escalator

    log_to_stderr()
    return build_escalator(strict=strict)


def _warn_problems(escalator: Escalator) -> bool:
    for problem in dict.fromkeys(escalator.problems):
        typer.echo(f"dhash: error: {problem}", err=True)
    return bool(escalator.problems)


def _show_sent(sent: Sequence[SentNotice]) -> None:
    for notice in sent:
        for o in notice.report.outcomes:
            note = o.error or o.detail or ""
            line = f"  {notice.alert_id}  {notice.label:<12} {o.channel:<28} {o.status:<19} {note}"
            typer.echo(line.rstrip())


def _severity(text: str | None) -> Severity | None:
    from dhash_rollout.notify import Severity

    return Severity.parse(text) if text else None


def _occurrence(key: str | None, run_id: str | None) -> str | None:
    """The run id that names this notice's occurrence: a notice is keyed on *when* it happened,
    never on its words, so two incidents with the same text are two notices."""
    if key or run_id:
        return run_id
    from dhash_rollout.runs.journal import new_run_id

    return new_run_id("notify")


def _fields(pairs: list[str] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--field wants NAME=VALUE, got {pair!r}")
        found[name.strip()] = value
    return found


def _active_version(environment: Environment | None) -> str:
    """The release the environment's ``current`` link points at, else ``unknown``."""
    if environment is None:
        return "unknown"
    from dhash_rollout.releases import read_release

    try:
        link = environment.root / "current"
        release = read_release(link.resolve()) if link.is_symlink() else None
    except (OSError, ValueError):
        release = None
    return release.version if release else "unknown"


def _phase_message(
    phase: str, env: str, version: str, initiator: str | None, reason: str | None
) -> str:
    of_version = f" of {version}" if version != "unknown" else ""
    if phase == "start":
        text = f"Deployment{of_version} to {env} started"
        text += f" by {initiator}" if initiator else ""
    elif phase == "success":
        text = f"Deployment{of_version} to {env} succeeded"
    elif phase == "failure":
        text = f"Deployment{of_version} to {env} failed"
    else:
        text = f"Rollback of {env}" + (f" to {version}" if version != "unknown" else "")
    return f"{text}: {reason}" if reason else text


def _show(report: DeliveryReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    event = report.event
    mode = " (dry run: nothing sent)" if report.dry_run else ""
    typer.echo(f"{event.kind} [{event.severity.name}] {event.env}  key {report.key}{mode}")
    for outcome in report.outcomes:
        attempts = f" ({outcome.attempts} attempts)" if outcome.attempts > 1 else ""
        note = outcome.error or outcome.detail or ""
        typer.echo(f"  {outcome.channel:<8} {outcome.status:<19} {note}{attempts}".rstrip())
        if report.dry_run and outcome.payload is not None:
            body = json.dumps(outcome.payload, indent=2, ensure_ascii=False)
            typer.echo("\n".join("      " + line for line in body.splitlines()))
    if report.log_file:
        typer.echo(f"log: {report.log_file}")
    if alert := event.fields.get("Alert"):
        typer.echo(f"alert {alert} escalates until acknowledged: dhash notify ack {alert}")
    kept = [o.channel for o in report.outcomes if o.status in ("outboxed", "pending")]
    if kept:
        typer.echo(
            f"not delivered yet to {', '.join(kept)}: kept in the outbox; "
            f"re-send with `dhash notify flush` (or run this command again with --key {report.key})"
        )


def _show_flush(report: FlushReport, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    if not report.items:
        typer.echo("outbox is empty")
        return
    verb = "outboxed" if report.dry_run else "flushed"
    for item in report.items:
        o = item.outcome
        note = o.error or o.detail or ""
        typer.echo(f"  {item.key}  {o.channel:<8} {o.status:<19} {note}".rstrip())
    typer.echo(f"{len(report.items)} {verb}; {report.remaining} left in the outbox")
