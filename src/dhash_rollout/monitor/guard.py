"""``dhash monitor`` started by hand: resume the last deploy's guard, or only observe.

When the environment's last deploy switched inside the monitoring window (and did not fail),
the monitor continues *that* deploy's window under its run id (its ledger, if the deploy's own
monitor phase was cut short) and, on a violation, acts once through :class:`RollbackAction`.
Otherwise it observes and alerts only. ``--rollback`` / ``--no-rollback`` override.

The monitor never performs a rollback itself: :class:`RollbackAction` is the one call site, so
the controller's rollback (trigger ``automatic``, reason = the gate) plugs in there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from dhash_rollout.runs.journal import JournalRecord, RunState

SWITCH_PHASE = "activate"  # the deploy phase after which the new release serves


@dataclass(frozen=True)
class OpenDeploy:
    run_id: str
    version: str | None
    previous_version: str | None
    switched_at: float  # epoch seconds: the monitoring window's start


def switch_time(records: Iterable[JournalRecord], run_id: str) -> float | None:
    """When the run's switch phase finished, from the journal (epoch seconds)."""
    when = None
    for record in records:
        if record.deploy_id == run_id and record.phase == SWITCH_PHASE and record.status == "done":
            when = datetime.fromisoformat(record.ts).timestamp()
    return when


def open_deploy(
    last: RunState | None, records: Iterable[JournalRecord], *, now: float, duration_s: float
) -> OpenDeploy | None:
    """The last deploy, if it switched less than ``duration_s`` ago and did not fail."""
    if last is None or last.kind != "deploy" or last.outcome == "failed":
        return None
    switched = switch_time(records, last.deploy_id)
    if switched is None or not switched <= now < switched + duration_s:
        return None
    params = last.params
    version = params.get("version")
    previous = params.get("previous_version") or params.get("previous")
    return OpenDeploy(
        last.deploy_id,
        str(version) if version else None,
        str(previous) if previous else None,
        switched,
    )


def should_guard(deploy: OpenDeploy | None, override: bool | None) -> bool:
    return override if override is not None else deploy is not None


@dataclass(frozen=True)
class RollbackOutcome:
    ok: bool
    run_id: str | None
    detail: str


class RollbackAction(Protocol):
    """Roll ``environment`` back because ``reason`` (trigger=automatic), at most once."""

    def __call__(
        self, environment: str, *, reason: str, monitor_run_id: str
    ) -> RollbackOutcome: ...
