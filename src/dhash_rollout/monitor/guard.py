"""``dhash monitor`` started by hand: resume the last deploy's guard, or only observe.

When the environment's last deploy is still owed its guard (it switched, its monitor phase was
cut short, and its window has not ended), ``dhash monitor`` resumes *that* deploy's guard under
its run id and lock (``deploy.guard.resume_guard``: the same ledger and window, and on a
violation the deploy's one automatic rollback through ``rollback.execute``). Otherwise it
observes and alerts only. ``--rollback`` / ``--no-rollback`` override; an observing run told
``--rollback`` acts once through :class:`RollbackAction` (a rollback that takes the lock).
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
    """The last deploy, if its guard is still owed: it switched, did not finish (its monitor
    phase did not reach a verdict: the controller died or was stopped while watching), and its
    window has not ended. The window's end is the one its monitor journaled when it started
    (its schedule runs from then), else the switch plus ``duration_s``. A finished deploy has
    nothing to resume: its guard concluded, or it was deployed ``--no-monitor``."""
    if last is None or last.kind != "deploy" or last.finished:
        return None
    if last.status_of(SWITCH_PHASE) != "done" or last.status_of("monitor") in ("done", "skipped"):
        return None
    switched = last.detail_of(SWITCH_PHASE).get("switched_at") or switch_time(
        records, last.deploy_id
    )
    if switched is None:
        return None
    started = last.detail_of("monitor").get("monitor.started")
    end = started.get("window_end") if isinstance(started, dict) else None
    window_end = float(end) if end is not None else float(switched) + duration_s
    if not float(switched) <= now < window_end:
        return None
    params = last.params
    version = params.get("version")
    previous = params.get("from_version") or params.get("previous_version")
    return OpenDeploy(
        last.deploy_id,
        str(version) if version else None,
        str(previous) if previous else None,
        float(switched),
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
