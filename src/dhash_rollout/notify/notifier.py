"""Send one event to its channels in parallel, within one time budget, without ever raising.

Per channel: minimum severity → claim in the delivery store (dedupe) → render → deliver with
retries → record ``sent`` or ``outboxed`` → one line in the notification log. Anything that
goes wrong becomes an outcome in the returned :class:`DeliveryReport`; a deploy, backup or
rollback that notifies is never failed or held up longer than the budget by a notification.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dhash_service.logs import get_logger

from .channel import Channel
from .file_channel import FileChannel
from .file_log import NotificationLog
from .model import Event, Severity
from .redaction import redact, register_secrets
from .retry import DeliveryError, DeliveryFailed, RetryPolicy, run_with_retries
from .store import STORE_FILE, Claim, DeliveryStore, Duplicate

if TYPE_CHECKING:
    from .store import OutboxItem

_log = get_logger("dhash.notify")

# How long ``send`` waits past its budget for workers to report before calling them pending.
_GRACE_SECONDS = 1.0


class Status(StrEnum):
    SENT = "sent"
    DUPLICATE = "skipped-duplicate"
    BELOW_MIN_SEVERITY = "below-min-severity"
    OUTBOXED = "outboxed"
    NOT_CONFIGURED = "not-configured"
    RENDERED = "rendered"
    FAILED = "failed"  # neither delivered nor kept in the outbox (the log dir is unusable)
    PENDING = "pending"  # still running when the budget ran out; the worker records the result


@dataclass(frozen=True)
class Unavailable:
    """A selected channel that cannot be used, and why (no URL, bad address...)."""

    name: str
    reason: str
    misconfigured: bool = False
    render: Callable[[Event], dict[str, Any]] | None = None


class EscalationHook(Protocol):
    """What :meth:`Notifier.send` asks of escalation (``notify/escalator.py``): make the notice
    an alert before it is sent (its id and how to acknowledge it), page at once after."""

    def open(self, event: Event) -> Event: ...

    def opened(self, event: Event, seconds_left: float) -> None: ...


@dataclass(frozen=True)
class ChannelOutcome:
    channel: str
    status: Status
    attempts: int = 0
    detail: str | None = None
    error: str | None = None
    payload: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"channel": self.channel, "status": str(self.status)}
        data["attempts"] = self.attempts
        for name in ("detail", "error", "payload"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data


_UNDELIVERED = frozenset({Status.OUTBOXED, Status.FAILED, Status.PENDING, Status.NOT_CONFIGURED})


@dataclass(frozen=True)
class DeliveryReport:
    key: str
    event: Event
    dry_run: bool
    outcomes: tuple[ChannelOutcome, ...]
    log_file: Path | None = None

    @property
    def all_delivered(self) -> bool:
        """True when no channel was left undelivered (duplicates and filtered ones count)."""
        return not any(o.status in _UNDELIVERED for o in self.outcomes)

    def outcome(self, channel: str) -> ChannelOutcome:
        for item in self.outcomes:
            if item.channel == channel:
                return item
        raise KeyError(channel)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "dry_run": self.dry_run,
            "event": self.event.to_dict(),
            "log_file": str(self.log_file) if self.log_file else None,
            "outcomes": [o.to_dict() for o in self.outcomes],
        }


@dataclass(frozen=True)
class FlushedItem:
    key: str
    outcome: ChannelOutcome


@dataclass(frozen=True)
class FlushReport:
    items: tuple[FlushedItem, ...] = ()
    remaining: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "remaining": self.remaining,
            "items": [{"key": i.key, **i.outcome.to_dict()} for i in self.items],
        }


@dataclass
class _Budget:
    deadline: float
    clock: Callable[[], float] = field(default=time.monotonic)

    def left(self) -> float:
        return self.deadline - self.clock()


class Notifier:
    """Delivers :class:`Event` objects; construct with :meth:`from_settings` in production."""

    def __init__(
        self,
        channels: Mapping[str, Channel | Unavailable],
        *,
        log_dir: Path,
        policy: RetryPolicy | None = None,
        total_seconds: float = 25.0,
        dedupe_seconds: float = 86400.0,
        min_severity: Mapping[str, Severity] | None = None,
        env_name: str | None = None,
        log: NotificationLog | None = None,
        sleep: Callable[[float], None] = time.sleep,
        escalation: EscalationHook | None = None,
    ) -> None:
        self.channels = dict(channels)
        self.escalation = escalation
        self.log_dir = log_dir
        self.policy = policy or RetryPolicy()
        self.total_seconds = total_seconds
        self.min_severity = dict(min_severity or {})
        self.env_name = env_name
        file_logs = [c.log for c in self.channels.values() if isinstance(c, FileChannel)]
        self.log = log or (file_logs[0] if file_logs else NotificationLog(log_dir))
        self.store = DeliveryStore(
            log_dir / STORE_FILE,
            dedupe_seconds=dedupe_seconds,
            stale_claim_seconds=max(120.0, 4 * total_seconds),
        )
        self._sleep = sleep
        self._wrote_log = threading.Event()
        register_secrets(
            s
            for c in self.channels.values()
            if not isinstance(c, Unavailable)
            for s in c.secret_values()
        )

    # --- sending ----------------------------------------------------------------------------

    def send(self, event: Event, dry_run: bool = False) -> DeliveryReport:
        """Deliver ``event`` to every channel; never raises for delivery problems."""
        if self.escalation is not None and not dry_run:
            event = self.escalation.open(event)
        key = event.dedupe_key
        if dry_run:
            outcomes = tuple(self._render_only(n, c, event) for n, c in self.channels.items())
            return DeliveryReport(key, event, True, outcomes)
        budget = _Budget(time.monotonic() + self.total_seconds)
        finished: queue.SimpleQueue[tuple[str, ChannelOutcome]] = queue.SimpleQueue()
        for name, channel in self.channels.items():
            # Daemon threads, not a pool: a server that trickles bytes slower than the read
            # timeout can hold a worker past the budget, and a process must never wait for it
            # at exit (ThreadPoolExecutor joins its workers at interpreter exit).
            threading.Thread(
                target=self._deliver_into,
                args=(finished, name, channel, event, budget),
                name=f"notify-{name}",
                daemon=True,
            ).start()
        results: dict[str, ChannelOutcome] = {}
        wait_until = budget.deadline + _GRACE_SECONDS
        while len(results) < len(self.channels):
            try:
                name, outcome = finished.get(timeout=max(0.0, wait_until - time.monotonic()))
            except queue.Empty:
                break
            results[name] = outcome
        outcomes = tuple(
            results.get(
                name,
                ChannelOutcome(
                    name, Status.PENDING, error="did not finish within the notification budget"
                ),
            )
            for name in self.channels
        )
        for outcome in outcomes:
            if outcome.status == Status.PENDING:
                # On disk now: if the process ends before the worker does, the log still has
                # the message and the store's claim goes stale into the outbox.
                _log.warning("notify.pending", channel=outcome.channel, key=key)
                self._record(event, outcome)
        if self.escalation is not None:
            self.escalation.opened(event, budget.left())
        log_file = self.log.path if self._wrote_log.is_set() else None
        return DeliveryReport(key, event, False, outcomes, log_file)

    def _render_only(
        self, name: str, channel: Channel | Unavailable, event: Event
    ) -> ChannelOutcome:
        try:
            if isinstance(channel, Unavailable):
                payload = channel.render(event) if channel.render else None
                return ChannelOutcome(
                    name, Status.NOT_CONFIGURED, error=channel.reason, payload=payload
                )
            detail = self._severity_gate(name, event)
            return ChannelOutcome(
                name, Status.RENDERED, detail=detail, payload=channel.render(event)
            )
        except Exception as exc:  # a rendering bug must not break a dry run either
            return ChannelOutcome(name, Status.FAILED, error=_describe(exc))

    def _severity_gate(self, name: str, event: Event) -> str | None:
        floor = self.min_severity.get(name, Severity.INFO)
        if event.severity < floor:
            return f"{event.severity.name} is below this channel's minimum {floor.name}"
        return None

    def _deliver_into(
        self,
        finished: queue.SimpleQueue[tuple[str, ChannelOutcome]],
        name: str,
        channel: Channel | Unavailable,
        event: Event,
        budget: _Budget,
    ) -> None:
        finished.put((name, self._deliver_safely(name, channel, event, budget)))

    def _deliver_safely(
        self, name: str, channel: Channel | Unavailable, event: Event, budget: _Budget
    ) -> ChannelOutcome:
        try:
            outcome = self._deliver(name, channel, event, budget)
        except Exception as exc:  # never let a bug in one channel escape into the caller
            outcome = ChannelOutcome(name, Status.FAILED, error=_describe(exc))
        self._record(event, outcome)
        return outcome

    def _deliver(
        self, name: str, channel: Channel | Unavailable, event: Event, budget: _Budget
    ) -> ChannelOutcome:
        if isinstance(channel, Unavailable):
            return ChannelOutcome(name, Status.NOT_CONFIGURED, error=channel.reason)
        below = self._severity_gate(name, event)
        if below:
            return ChannelOutcome(name, Status.BELOW_MIN_SEVERITY, detail=below)
        claim = self._claim(event, name)
        if isinstance(claim, Duplicate):
            when = datetime.fromtimestamp(claim.since, UTC).isoformat(timespec="seconds")
            verb = "sent" if claim.status == "sent" else "being sent by another run since"
            return ChannelOutcome(name, Status.DUPLICATE, detail=f"already {verb} {when}")
        return self._attempt(name, channel, event, claim, budget)

    def _attempt(
        self,
        name: str,
        channel: Channel,
        event: Event,
        claim: Claim | None,
        budget: _Budget,
    ) -> ChannelOutcome:
        def one_attempt(seconds_left: float) -> str:
            try:
                return channel.deliver(channel.render(event), seconds_left)
            except DeliveryError:
                raise
            except Exception as exc:  # a bug in a channel: keep the message, do not retry
                raise DeliveryError(f"{name}: {_describe(exc)}", retryable=False) from exc

        try:
            detail, attempts = run_with_retries(
                one_attempt,
                self.policy if name != "file" else RetryPolicy(max_attempts=1),
                budget.deadline,
                label=name,
                sleep=self._sleep,
                clock=budget.clock,
            )
        except DeliveryFailed as failed:
            error = redact(f"{failed.error.message} ({failed.why})")
            kept = self._finish(claim, sent=False, attempts=failed.attempts, error=error)
            status = Status.OUTBOXED if kept else Status.FAILED
            _log.warning("notify.undelivered", channel=name, status=str(status), error=error)
            return ChannelOutcome(name, status, attempts=failed.attempts, error=error)
        if isinstance(channel, FileChannel):
            self._wrote_log.set()
        self._finish(claim, sent=True, attempts=attempts, error=None)
        _log.info("notify.sent", channel=name, key=event.dedupe_key, attempts=attempts)
        return ChannelOutcome(name, Status.SENT, attempts=attempts, detail=redact(detail))

    def _claim(self, event: Event, channel: str) -> Claim | Duplicate | None:
        """Claim the delivery; None when the store is unusable (send anyway: a lost alert is
        worse than a duplicate)."""
        try:
            return self.store.claim(event.dedupe_key, channel, event.to_dict())
        except Exception as exc:
            _log.warning("notify.store_unavailable", channel=channel, error=_describe(exc))
            return None

    def _finish(self, claim: Claim | None, *, sent: bool, attempts: int, error: str | None) -> bool:
        if claim is None:
            return False
        try:
            self.store.finish(claim, sent=sent, attempts=attempts, error=error)
        except Exception as exc:
            _log.warning("notify.store_unavailable", channel=claim.channel, error=_describe(exc))
            return False
        return True

    def _record(self, event: Event, outcome: ChannelOutcome) -> None:
        """One notification-log line per outcome (the file channel's line is its delivery)."""
        if outcome.channel == "file" and outcome.status in (Status.SENT, Status.DUPLICATE):
            return
        line = self.log.record(
            event,
            outcome.channel,
            str(outcome.status),
            attempts=outcome.attempts or None,
            detail=outcome.detail,
            error=outcome.error,
        )
        try:
            self.log.append(line)
            self._wrote_log.set()
        except OSError as exc:
            _log.warning("notify.log_unwritable", path=str(self.log.path), error=_describe(exc))

    # --- the outbox -------------------------------------------------------------------------

    def outbox(self, limit: int | None = None) -> list[OutboxItem]:
        return self.store.outbox(limit)

    def flush(
        self, *, limit: int | None = None, timeout: float | None = None, dry_run: bool = False
    ) -> FlushReport:
        """Re-send outboxed deliveries, oldest first, within ``timeout`` (default: the budget).

        A channel that fails once is not tried again in the same flush, so a dead endpoint
        costs one retry cycle, not one per queued message.
        """
        items = self.store.outbox(limit)
        if dry_run:
            return FlushReport(
                tuple(
                    FlushedItem(
                        i.key,
                        ChannelOutcome(i.channel, Status.OUTBOXED, i.attempts, error=i.last_error),
                    )
                    for i in items
                ),
                remaining=len(items),
                dry_run=True,
            )
        budget = _Budget(time.monotonic() + (timeout or self.total_seconds))
        failed_channels: set[str] = set()
        flushed: list[FlushedItem] = []
        for item in items:
            outcome = self._flush_one(item, budget, failed_channels)
            if outcome.status in (Status.OUTBOXED, Status.FAILED, Status.PENDING):
                failed_channels.add(item.channel)
            flushed.append(FlushedItem(item.key, outcome))
        remaining = len(self.store.outbox())
        return FlushReport(tuple(flushed), remaining=remaining)

    def _flush_one(
        self, item: OutboxItem, budget: _Budget, failed_channels: set[str]
    ) -> ChannelOutcome:
        name = item.channel
        channel = self.channels.get(name)
        if channel is None or isinstance(channel, Unavailable):
            reason = channel.reason if channel else f"channel {name!r} is not configured"
            return ChannelOutcome(name, Status.NOT_CONFIGURED, item.attempts, error=reason)
        if name in failed_channels:
            return ChannelOutcome(
                name, Status.OUTBOXED, item.attempts, error="skipped: failed earlier in this flush"
            )
        if budget.left() <= 0:
            return ChannelOutcome(name, Status.OUTBOXED, item.attempts, error="flush timed out")
        try:
            event = Event.from_dict(item.event)
        except Exception as exc:
            return ChannelOutcome(name, Status.FAILED, item.attempts, error=_describe(exc))
        claim = self._claim(event, name)
        if isinstance(claim, Duplicate):
            return ChannelOutcome(name, Status.DUPLICATE, detail="taken by another run")
        finished: queue.SimpleQueue[tuple[str, ChannelOutcome]] = queue.SimpleQueue()

        def attempt() -> None:
            try:
                outcome = self._attempt(name, channel, event, claim, budget)
            except Exception as exc:  # never let a bug in one channel escape into the caller
                outcome = ChannelOutcome(name, Status.FAILED, error=_describe(exc))
            self._record(event, outcome)
            finished.put((name, outcome))

        # In a daemon thread for the same reason as in :meth:`send`: a trickling server must
        # not hold the flush (or the process) past its time budget.
        threading.Thread(target=attempt, name=f"notify-flush-{name}", daemon=True).start()
        try:
            return finished.get(timeout=max(0.0, budget.left()) + _GRACE_SECONDS)[1]
        except queue.Empty:
            pending = ChannelOutcome(
                name, Status.PENDING, item.attempts, error="did not finish within the flush budget"
            )
            self._record(event, pending)
            return pending


def _describe(exc: BaseException) -> str:
    return redact(f"{type(exc).__name__}: {exc}")


__all__ = [
    "ChannelOutcome",
    "DeliveryReport",
    "EscalationHook",
    "FlushReport",
    "FlushedItem",
    "Notifier",
    "Status",
    "Unavailable",
]
