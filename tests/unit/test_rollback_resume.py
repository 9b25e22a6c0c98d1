"""Resuming an automatic rollback that was killed inside its deploy closes that deploy too."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from dhash_rollout.environments import load_environment
from dhash_rollout.rollback.run import _close_parent
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
