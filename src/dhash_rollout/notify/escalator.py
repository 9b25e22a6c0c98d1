"""Escalation: an ERROR nobody acknowledges climbs the environment's matrix until someone does.

No long-lived process of ours: every step is a short, idempotent call on the notification
store. :meth:`Escalator.open` turns an escalating notice into an alert (its id and how to
acknowledge it are added to the notice); :meth:`Escalator.escalate_due` — run by
``dhash notify escalate`` from cron or a systemd timer every minute, and by the monitor on its
polls — claims what the pure policy (:mod:`.escalation`) says is due and sends it to the level's
contacts; an acknowledgement or a resolution stops the climb and is announced once to the levels
already paged. Pages go through the ordinary :class:`Notifier`, so a contact that cannot be
reached is outboxed and re-sent by the next ``escalate`` (or ``dhash notify flush``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dhash_service.errors import ConfigError
from dhash_service.logs import get_logger

from . import render
from .ack_link import AckLinks
from .alerts import Alert, AlertStore, NoticeClaim, store_errors
from .channel import Channel
from .contacts import ChannelBuilder, contact_channel, contact_name
from .escalation import (
    ACK_NOTICE,
    Ladder,
    next_due,
    notices_due,
    paged_level,
)
from .escalation_config import Contact, EscalationConfig
from .model import MAX_FIELDS, Event, Severity
from .notifier import DeliveryReport, FlushReport, Notifier, Status, Unavailable
from .retry import RetryPolicy
from .store import STORE_FILE, DeliveryStore

_log = get_logger("dhash.notify")

# Below this many seconds of the sender's budget, L1 is left to the next ``escalate`` run.
_MIN_INLINE_SECONDS = 1.0


def ack_command(alert_id: str) -> str:
    return f"dhash notify ack {alert_id}"


NOTICE_LINK = "notice"  # the link in the escalating notice itself, before any page


def ack_via_link(level: str) -> str:
    """How an acknowledgement through a link is recorded (``acked_via``): whose link it was."""
    return "the notice's ack link" if level == NOTICE_LINK else f"the {level} ack link"


@dataclass(frozen=True)
class SentNotice:
    """One notice sent (or outboxed) by a run: which alert, what, to whom, with what outcome."""

    alert_id: str
    notice: str
    label: str
    report: DeliveryReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "alert": self.alert_id,
            "notice": self.notice,
            "label": self.label,
            "outcomes": [o.to_dict() for o in self.report.outcomes],
        }


@dataclass(frozen=True)
class EscalationRun:
    sent: tuple[SentNotice, ...] = ()
    flushed: FlushReport | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": [s.to_dict() for s in self.sent],
            "retried": self.flushed.to_dict()["items"] if self.flushed else [],
        }


@dataclass(frozen=True)
class AlertStatus:
    """An alert as ``dhash notify status`` shows it."""

    alert: Alert
    level: str | None  # the highest level paged
    next_level: str | None
    next_in_seconds: float | None
    configured: bool

    def to_dict(self) -> dict[str, Any]:
        a = self.alert
        return {
            "id": a.id,
            "state": a.state,
            "env": a.env,
            "severity": a.severity.name,
            "message": a.event.get("message"),
            "key": a.key,
            "run_id": a.run_id,
            "opened_at": _iso(a.opened_at),
            "level": self.level,
            "next_level": self.next_level,
            "next_in_seconds": self.next_in_seconds,
            "escalation_configured": self.configured,
            "acked_at": _iso(a.acked_at),
            "acked_by": a.acked_by,
            "acked_via": a.acked_via,
            "resolved_at": _iso(a.resolved_at),
            "resolved_by": a.resolved_by,
            "notices": [
                {
                    "notice": n.notice,
                    "label": n.label,
                    "claimed_at": _iso(n.claimed_at),
                    "sent_at": _iso(n.done_at),
                    "contacts": dict(n.outcomes),
                }
                for n in a.notices
            ],
        }


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class Escalator:
    """Opens alerts, pages what is due, takes acks and resolutions; safe to run concurrently."""

    def __init__(
        self,
        *,
        log_dir: Path,
        build: ChannelBuilder,
        config_for: Callable[[str], EscalationConfig | None],
        policy: RetryPolicy | None = None,
        total_seconds: float = 25.0,
        dedupe_seconds: float = 86400.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        links: AckLinks | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.links = links  # None: no ack links configured, pages name the command only
        self.build = build
        self.policy = policy or RetryPolicy()
        self.total_seconds = total_seconds
        self.dedupe_seconds = dedupe_seconds
        self.clock = clock
        self._sleep = sleep
        self._config_for = config_for
        self._configs: dict[str, EscalationConfig | None] = {}
        # What kept someone from being paged: a matrix that cannot be read, a contact that is
        # not configured. ``dhash notify escalate`` says so (exit 2), never pages nobody silently.
        self.problems: list[str] = []
        stale = max(120.0, 4 * total_seconds)
        self.store = DeliveryStore(
            log_dir / STORE_FILE, dedupe_seconds=dedupe_seconds, stale_claim_seconds=stale
        )
        self.alerts = AlertStore(self.store, stale_claim_seconds=stale)

    def config(self, env: str) -> EscalationConfig | None:
        if env not in self._configs:
            try:
                self._configs[env] = self._config_for(env)
            except ConfigError as exc:  # e.g. the file was broken after the alert opened
                _log.warning("notify.escalation_config_unusable", env=env, error=exc.message)
                self.problems.append(f"escalation of {env} is not possible: {exc.message}")
                self._configs[env] = None
        return self._configs[env]

    # --- the notifier's hook --------------------------------------------------------------

    def open(self, event: Event) -> Event:
        """The notice as sent: with its alert id and how to acknowledge it when it escalates
        (unchanged otherwise, or if the store cannot be used: the notice matters more)."""
        config = self.config(event.env)
        if config is None or not config.escalates(event.severity):
            return event
        try:
            alert = self.alerts.open(
                key=event.dedupe_key,
                env=event.env,
                severity=event.severity,
                event=event.to_dict(),
                run_id=event.run_id,
                now=self.clock(),
            )
        except Exception as exc:  # never fail the sender over escalation
            _log.warning("notify.alert_not_opened", key=event.dedupe_key, error=repr(exc))
            return event
        return _with_alert(event, alert.id, self._link(alert.id, None))

    def opened(self, event: Event, seconds_left: float) -> None:
        """Page the alert's first level at once, within what is left of the sender's budget
        (with less, the next ``escalate`` run pages it within a minute); resolve what the
        notice says it resolves."""
        try:
            by = event.initiator or f"{event.kind} notice"
            if event.resolves:  # e.g. a rollback closing the alert of the deploy it undid
                self.resolve(event.resolves, by=by, seconds=seconds_left)
            if event.run_id and is_recovery(event):  # the run's own alerts are over
                self.resolve(event.run_id, by=by, seconds=seconds_left)
            if is_gate_recovery(event):  # the gates pass again: their alerts are over
                self.resolve_gates(event.env, by=by, seconds=seconds_left)
            alert_id = event.fields.get("Alert")
            if alert_id and seconds_left >= _MIN_INLINE_SECONDS:
                self.escalate_due(only=alert_id, seconds=seconds_left, flush=False)
        except Exception as exc:
            _log.warning("notify.escalation_inline_failed", key=event.dedupe_key, error=repr(exc))

    # --- escalating -----------------------------------------------------------------------

    def escalate_due(
        self,
        now: float | None = None,
        *,
        only: str | None = None,
        seconds: float | None = None,
        flush: bool = True,
    ) -> EscalationRun:
        """Re-send outboxed pages, then send what is due now: pages of levels reached,
        announcements of acks and resolutions. Idempotent: a second run at the same moment
        (another process, another host sharing the store) sends nothing twice."""
        at = self.clock() if now is None else now

        def decide(alert: Alert, taken: frozenset[str]) -> Iterable[tuple[str, str]]:
            if only is not None and alert.id != only:
                return ()
            return self._due(alert, taken, at)

        # The outbox first: what failed in an earlier run is retried once per run, what fails
        # in this one waits for the next (a minute later from cron), not for a second try now.
        flushed = self._flush(seconds) if flush else None
        claims = self.alerts.claim(decide, at)
        sent = tuple(self._send(claim, at, seconds) for claim in claims)
        return EscalationRun(sent, flushed)

    def _due(self, alert: Alert, taken: frozenset[str], now: float) -> list[tuple[str, str]]:
        """The pure policy's answer for this alert, with each notice's label."""
        config = self.config(alert.env)
        if config is None:
            return []
        ladder = None
        if config.escalates(alert.severity):
            ladder = Ladder(config.after_seconds(), config.start_index(alert.severity))
        due = notices_due(
            ladder,
            now - alert.opened_at,
            taken,
            acked=alert.acked_at is not None,
            resolved=alert.resolved_at is not None,
        )
        return [(notice, _label(notice, config)) for notice in due]

    def _send(self, claim: NoticeClaim, now: float, seconds: float | None) -> SentNotice:
        alert = claim.alert
        config = self.config(alert.env)
        assert config is not None  # claimed only for configured environments
        index = paged_level(claim.notice)
        if index is not None:
            level = config.levels[index]
            contacts: list[Contact] = list(level.contacts)
            event = _page_event(alert, level.name, now, self._link(alert.id, index, now))
        else:
            contacts = self._paged_contacts(alert, config)
            event = _closing_event(alert, claim.notice)
        channels = {contact_name(c): contact_channel(c, self.build) for c in contacts}
        report = self._notifier(channels, seconds).send(event)
        self.alerts.finish(claim, {o.channel: str(o.status) for o in report.outcomes}, self.clock())
        for outcome in report.outcomes:
            if outcome.status in (Status.NOT_CONFIGURED, Status.FAILED):  # neither sent nor kept
                problem = f"alert {alert.id} {claim.label}: {outcome.channel} was not reached"
                self.problems.append(f"{problem}: {outcome.error}")
                _log.warning(
                    "notify.page_not_deliverable",
                    alert=alert.id,
                    contact=outcome.channel,
                    error=outcome.error,
                )
        return SentNotice(alert.id, claim.notice, claim.label, report)

    def _link(self, alert_id: str, level: int | None, now: float | None = None) -> str | None:
        """The signed ack URL for this notice, when ack links are configured."""
        if self.links is None:
            return None
        return self.links.url(alert_id, level, self.clock() if now is None else now)

    def level_name(self, alert: Alert, level: int | None) -> str:
        """The name of the level whose page carried a link (``notice``: the notice itself)."""
        config = self.config(alert.env)
        if level is None or config is None or level >= len(config.levels):
            return NOTICE_LINK if level is None else f"level {level + 1}"
        return config.levels[level].name

    def _paged_contacts(self, alert: Alert, config: EscalationConfig) -> list[Contact]:
        """The contacts of every level paged so far, once each: who hears of an ack."""
        found: dict[str, Contact] = {}
        for level in sorted(alert.paged_levels()):
            if level < len(config.levels):
                for contact in config.levels[level].contacts:
                    found.setdefault(contact_name(contact), contact)
        return list(found.values())

    def _notifier(
        self, channels: Mapping[str, Channel | Unavailable], seconds: float | None
    ) -> Notifier:
        return Notifier(
            channels,
            log_dir=self.log_dir,
            policy=self.policy,
            total_seconds=min(self.total_seconds, seconds or self.total_seconds),
            dedupe_seconds=self.dedupe_seconds,
            sleep=self._sleep,
        )

    def contact_channels(self, envs: Iterable[str]) -> dict[str, Channel | Unavailable]:
        """Every contact of these environments' matrices, by channel name (for the outbox)."""
        found: dict[str, Channel | Unavailable] = {}
        for env in envs:
            config = self.config(env)
            for level in config.levels if config else ():
                for contact in level.contacts:
                    found.setdefault(contact_name(contact), contact_channel(contact, self.build))
        return found

    def _flush(self, seconds: float | None) -> FlushReport | None:
        """Re-send outboxed pages and announcements (the contacts' rows of the outbox)."""
        with store_errors(self.store.path):
            items = self.store.outbox()
        channels = self.contact_channels({str(i.event.get("env")) for i in items})
        if not any(i.channel in channels for i in items):
            return None
        report = self._notifier(channels, seconds).flush()
        mine = tuple(i for i in report.items if i.outcome.channel in channels)
        return replace(report, items=mine)

    # --- acknowledging, resolving, status -------------------------------------------------

    def ack(
        self, alert_id: str, by: str, now: float | None = None, *, via: str | None = None
    ) -> tuple[Alert, bool, EscalationRun]:
        """Stop the climb; the levels already paged hear of it once (here, or on the next
        ``escalate`` if this process dies first). ``via``: how (None: the command line)."""
        at = self.clock() if now is None else now
        alert, changed = self.alerts.ack(alert_id, by, at, via=via)
        run = self.escalate_due(at, only=alert.id, flush=False)
        return alert, changed, run

    def resolve(
        self, ref: str, by: str, now: float | None = None, *, seconds: float | None = None
    ) -> list[Alert]:
        """Close the alerts of ``ref`` (alert id, notice key or run id): no further paging;
        the levels already paged hear that it is resolved."""
        at = self.clock() if now is None else now
        closed = self.alerts.resolve(ref, by, at)
        for alert in closed:
            self.escalate_due(at, only=alert.id, seconds=seconds, flush=False)
        return closed

    def resolve_gates(
        self, env: str, by: str, now: float | None = None, *, seconds: float | None = None
    ) -> list[Alert]:
        """Close the open quality-gate alerts of ``env`` (a later watch found every gate
        passing); the levels already paged hear that it is resolved."""
        at = self.clock() if now is None else now
        closed = self.alerts.resolve_kind(env, "gate", by, at)
        for alert in closed:
            self.escalate_due(at, only=alert.id, seconds=seconds, flush=False)
        return closed

    def status(
        self, *, include_resolved: bool = False, now: float | None = None
    ) -> list[AlertStatus]:
        """Unresolved alerts (open and acknowledged), or all of them."""
        at = self.clock() if now is None else now
        found: list[AlertStatus] = []
        for alert in self.alerts.alerts(include_resolved=include_resolved):
            config = self.config(alert.env)
            paged = sorted(alert.paged_levels())
            level_name = next_name = None
            next_in = None
            if config is not None:
                names = [lvl.name for lvl in config.levels]
                level_name = names[paged[-1]] if paged and paged[-1] < len(names) else None
                ladder = Ladder(config.after_seconds(), config.start_index(alert.severity))
                upcoming = next_due(
                    ladder, at - alert.opened_at, set(paged), stopped=not alert.is_open
                )
                if upcoming is not None:
                    next_name, next_in = names[upcoming[0]], round(upcoming[1], 1)
            found.append(AlertStatus(alert, level_name, next_name, next_in, config is not None))
        return found


# Phases that end a run well: a rollback that completed, a deploy that succeeded.
RECOVERY_PHASES = frozenset({"rolled_back", "success", "complete"})


def is_recovery(event: Event) -> bool:
    """A notice that says its run recovered, so the run's alerts resolve (as alert managers
    close an alert on its "resolved" notification)."""
    return event.phase in RECOVERY_PHASES or event.kind == "success"


# The phase of the monitor's "quality gates passed" notice (``dhash monitor``'s PASSED verdict).
GATES_PASSED_PHASE = "gates-passed"


def is_gate_recovery(event: Event) -> bool:
    """A monitor notice saying every gate of the environment passed a whole watch: its earlier
    gate alerts (an observing monitor's FAILED, nobody rolled back) resolve, as an alert
    manager resolves an alert whose condition cleared."""
    return event.kind == "gate" and event.phase == GATES_PASSED_PHASE


def _label(notice: str, config: EscalationConfig) -> str:
    level = paged_level(notice)
    if level is not None:
        return config.levels[level].name
    return "acknowledged" if notice == ACK_NOTICE else "resolved"


def _with_alert(event: Event, alert_id: str, link: str | None) -> Event:
    how = ack_command(alert_id)
    return replace(
        event,
        key=event.dedupe_key,  # the occurrence's key, fixed before the text changes
        message=f"{event.message}\n\nAlert {alert_id} escalates until acknowledged: {how}"
        + _or_open(link),
        fields=_fields(event.fields, _ack_fields({"Alert": alert_id}, how, link)),
    )


def _or_open(link: str | None) -> str:
    return f", or open {link}" if link else ""


def _ack_fields(base: dict[str, str], how: str, link: str | None) -> dict[str, str]:
    found = {**base, "Acknowledge": how}
    if link:
        found[render.ACK_LINK_FIELD] = link
    return found


def _fields(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    kept = [(k, v) for k, v in base.items() if k not in extra][: MAX_FIELDS - len(extra)]
    return {**dict(kept), **extra}


def _page_event(alert: Alert, level: str, now: float, link: str | None) -> Event:
    original = Event.from_dict(alert.event)
    minutes = int(max(0.0, now - alert.opened_at) // 60)
    how = ack_command(alert.id)
    age = "just raised" if minutes == 0 else f"unacknowledged for {minutes} min"
    return replace(
        original,
        key=f"{alert.id}:{_page_key(level)}",
        subject=render.truncate(
            render.single_line(f"[{level}] {render.headline(original)} · alert {alert.id}"), 200
        ),
        message=f"{original.message}\n\nAlert {alert.id} ({age}): paging {level}. "
        f"Acknowledge: {how}{_or_open(link)}",
        fields=_fields(
            original.fields, _ack_fields({"Alert": alert.id, "Level": level}, how, link)
        ),
        resolves=None,
    )


def _page_key(level: str) -> str:
    return f"page-{level}"


def _closing_event(alert: Alert, notice: str) -> Event:
    """The all-clear to the levels paged: INFO, so it reads as news, not as a new alarm."""
    original = Event.from_dict(alert.event)
    if notice == ACK_NOTICE:
        when = _iso(alert.acked_at)
        via = f" through {alert.acked_via}" if alert.acked_via else ""
        text = (
            f"Alert {alert.id} acknowledged by {alert.acked_by} at {when}{via}: no further levels."
        )
        kind, subject = "info", f"[ACK] alert {alert.id} acknowledged by {alert.acked_by}"
    else:
        when = _iso(alert.resolved_at)
        text = f"Alert {alert.id} resolved by {alert.resolved_by} at {when}: paging stopped."
        kind, subject = "success", f"[RESOLVED] alert {alert.id}"
    return Event(
        kind=kind,
        env=alert.env,
        message=f"{text}\n\nThe alert: {original.message}",
        severity=Severity.INFO,
        version=original.version,
        key=f"{alert.id}:{notice}",
        subject=render.single_line(f"{subject} · {render.headline(original)}")[:200],
        fields={"Alert": alert.id},
    )
