"""Resuming an automatic rollback that was killed inside its deploy closes that deploy too."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from dhash_rollout.environments import load_environment
from dhash_rollout.rollback.run import _close_parent, _served_snapshot
from dhash_rollout.runs.context import RunContext
from dhash_rollout.runs.journal import RUN_PHASE, Journal
from dhash_rollout.targets import Target


def _ctx(tmp_path: Path, journal: Journal, run_id: str) -> RunContext:
    return RunContext(
        "rollback", load_environment("staging", tmp_path), cast(Target, object()), journal,
        run_id, tmp_path, tmp_path / "logs", tmp_path / "backups", None, print,
    )  # fmt: skip


def test_the_open_parent_deploy_is_closed_as_superseded(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("deploy-1", RUN_PHASE, "started", {"kind": "deploy", "version": "2.0.0"})
    journal.append("deploy-1", "auto_rollback", "started", {})
    journal.append("rollback-1", RUN_PHASE, "started", {"kind": "rollback", "parent": "deploy-1"})
    child = journal.run("rollback-1")
    assert child is not None
    _close_parent(_ctx(tmp_path, journal, "rollback-1"), child)
    parent = journal.run("deploy-1")
    assert parent is not None and parent.outcome == "failed"
    assert [r.detail for r in journal.records() if r.phase == RUN_PHASE][-1] == {
        "error": "superseded by rollback-1"
    }


def test_a_finished_parent_or_none_is_left_alone(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("deploy-1", RUN_PHASE, "started", {"kind": "deploy"})
    journal.append("deploy-1", RUN_PHASE, "failed", {"error": "quality gates failed"})
    journal.append("rollback-1", RUN_PHASE, "started", {"kind": "rollback", "parent": "deploy-1"})
    journal.append("rollback-2", RUN_PHASE, "started", {"kind": "rollback"})
    before = len(list(journal.records()))
    for run_id in ("rollback-1", "rollback-2"):
        state = journal.run(run_id)
        assert state is not None
        _close_parent(_ctx(tmp_path, journal, run_id), state)
    assert len(list(journal.records())) == before


def test_the_database_that_served_is_the_first_swaps_snapshot_journaled_before_it(
    tmp_path: Path,
) -> None:
    """Issue 12 item 2: where the first swap kept the serving database is journaled before the
    swap (``served_snapshot``); a resumed run's own restore result names its own snapshot (the
    interrupted run's restore), which must not win. Journals from before that record name
    the snapshot in the restore's result only."""
    cases = [
        ([{"served_snapshot": "db.prerestore-1"}], "db.prerestore-1"),  # killed after the swap
        (
            [{"served_snapshot": "db.prerestore-1"}, {"result": {"snapshot": "db.prerestore-2"}}],
            "db.prerestore-1",  # resumed, restored again: its own snapshot is not the one
        ),
        ([{"result": {"snapshot": "db.prerestore-1"}}], "db.prerestore-1"),  # an older journal
        ([{"action": "restore"}], None),  # killed before the swap: nothing replaced
    ]
    for n, (details, expected) in enumerate(cases):
        journal = Journal(tmp_path / f"journal-{n}.jsonl")
        journal.append("rollback-1", RUN_PHASE, "started", {"kind": "rollback"})
        for detail in details:
            journal.append("rollback-1", "restore", "started", detail)
        run = journal.run("rollback-1")
        assert run is not None
        assert _served_snapshot(run) == expected, details
