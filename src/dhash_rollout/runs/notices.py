"""The run's notices: a deploy or rollback event to the environment's channels, never raising."""

from __future__ import annotations

from typing import Any

from dhash_rollout.notify import DeliveryReport, Event, Severity, notifier_from_settings
from dhash_rollout.runs.context import RunContext
from dhash_service.errors import DhashError


def notify(
    ctx: RunContext,
    kind: str,
    message: str,
    *,
    severity: str = "INFO",
    version: str | None = None,
    initiator: str | None = None,
    reason: str | None = None,
    trigger: str | None = None,
    phase: str | None = None,
    resolves: str | None = None,
) -> dict[str, Any]:
    """Tell the environment's channels; delivery problems are reported, never raised. With no
    channel configured the run says so (the phase's check mark would read as "notified")."""
    if not ctx.env.channels:
        ctx.say(f"    no notification channel is configured for {ctx.env.name}: nothing was sent")
        ctx.logger.warning("notification_not_sent", request_id=ctx.run_id, error="no channel")
        return {"notification": {"none": "no channel is configured"}}
    try:
        notifier = notifier_from_settings(
            ctx.env.name, channels=ctx.env.channels, log_dir=ctx.log_dir
        )
        event = Event(
            kind=kind,
            env=ctx.env.name,
            message=message,
            severity=Severity.parse(severity),
            version=version,
            initiator=initiator,
            reason=reason,
            trigger=trigger,
            phase=phase,
            run_id=ctx.run_id,  # the key is run id and phase; alerts learn their run
            resolves=resolves,  # an alert id, notice key or run id this notice closes
        )
        report = notifier.send(event)
    except DhashError as err:  # bad channel settings or event fields: the run goes on
        ctx.logger.error("notification_not_sent", request_id=ctx.run_id, error=err.message)
        ctx.say(f"notification not sent: {err.message}")
        return {"notification": {"error": err.message}}
    return {"notification": _delivery_summary(report)}


def _delivery_summary(report: DeliveryReport) -> dict[str, str]:
    return {outcome.channel: str(outcome.status) for outcome in report.outcomes}
