"""What the toolkit itself recorded about the demo's run, read back from the site's files.

The end of the story quotes the toolkit's own records, never the demo's guesses: the journal
(phases of the deploy and of the rollback it ran, when each switch happened), the monitor's
ledger (the verdict and each gate's evidence) and the notification log (what the file channel
wrote, and the outcome of every other channel).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dhash_rollout.monitor.guard import switch_time
from dhash_rollout.monitor.ledger import read_rows
from dhash_rollout.runs.journal import Journal, RunState


def stored_image_ids(database_url: str) -> set[int]:
    """Every image id in the environment's database, read straight from it."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {int(row[0]) for row in conn.execute(text("SELECT id FROM images"))}
    finally:
        engine.dispose()


@dataclass(frozen=True)
class DeployRecord:
    """The last deploy of the site, as its journal tells it."""

    run_id: str
    version: str | None
    outcome: str | None
    phases: dict[str, str]  # phase -> status, in order
    monitor: dict[str, Any]  # verdict, reason, failed_gate, report, polls
    rollback_run: str | None
    rollback_ok: bool
    switched_at: float | None  # epoch seconds: B started taking the traffic
    switched_back_at: float | None  # the rollback's switch to A
    rollback_phases: dict[str, str] = field(default_factory=dict)


def last_deploy(root: Path) -> DeployRecord | None:
    journal = Journal.for_root(root)
    run = journal.last_run("deploy")
    if run is None:
        return None
    records = list(journal.records())
    rolled = run.detail_of("auto_rollback")
    child_id = rolled.get("rollback_run")
    child: RunState | None = journal.run(str(child_id)) if child_id else None
    return DeployRecord(
        run_id=run.deploy_id,
        version=str(run.params.get("version")) if run.params.get("version") else None,
        outcome=run.outcome,
        phases={name: state.status for name, state in run.phases.items()},
        monitor=run.detail_of("monitor"),
        rollback_run=str(child_id) if child_id else None,
        rollback_ok=bool(rolled.get("ok")) and run.status_of("auto_rollback") == "done",
        switched_at=switch_time(records, run.deploy_id),
        switched_back_at=switch_time(records, str(child_id)) if child_id else None,
        rollback_phases={n: s.status for n, s in child.phases.items()} if child else {},
    )


def monitor_verdict(report: Path | None) -> dict[str, Any] | None:
    """The ledger's verdict row (verdict, reason, failed gate, every gate's evidence)."""
    if report is None:
        return None
    rows = read_rows(report.with_suffix(".jsonl"))
    return next((r for r in reversed(rows) if r.get("kind") == "verdict"), None)


def monitor_start(report: Path | None) -> dict[str, Any] | None:
    if report is None:
        return None
    rows = read_rows(report.with_suffix(".jsonl"))
    return next((r for r in rows if r.get("kind") == "start"), None)


@dataclass(frozen=True)
class NoticeLine:
    channel: str
    status: str
    severity: str
    kind: str
    message: str


def notice_lines(log_dir: Path) -> list[NoticeLine]:
    """Every line of the site's notification logs, oldest first."""
    lines = []
    for path in sorted(log_dir.glob("notifications_*.log")):
        for text in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(text)
            except ValueError:
                continue
            note = row.get("notification") or {}
            lines.append(
                NoticeLine(
                    channel=str(row.get("channel", "")),
                    status=str(row.get("status", "")),
                    severity=str(note.get("severity", "")),
                    kind=str(note.get("kind", "")),
                    message=str(note.get("message", "")),
                )
            )
    return lines
