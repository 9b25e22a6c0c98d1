"""The journal: append-only, fsynced lines, and a reader that says how far a run got."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dhash_rollout.runs.journal import Journal, JournalRecord, new_run_id


def _journal(tmp_path: Path) -> Journal:
    return Journal.for_root(tmp_path / "var" / "production")


def test_records_are_one_json_object_per_line_with_the_contract_fields(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.append("deploy-1", "run", "started", {"kind": "deploy", "version": "2.0.0"})
    journal.append("deploy-1", "backup", "started")
    lines = journal.path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert set(first) == {"ts", "deploy_id", "phase", "status", "detail"}
    assert first["detail"] == {"kind": "deploy", "version": "2.0.0"}


def test_last_run_reports_done_phases_and_the_interrupted_one(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    run = "deploy-a"
    journal.append(run, "run", "started", {"kind": "deploy", "version": "2.0.0"})
    journal.append(run, "backup", "started")
    journal.append(run, "backup", "done", {"path": "backups/x.zip"})
    journal.append(run, "install", "started")
    state = journal.last_run("deploy")
    assert state is not None
    assert state.params["version"] == "2.0.0"
    assert state.status_of("backup") == "done"
    assert state.detail_of("backup") == {"path": "backups/x.zip"}
    assert state.interrupted_phase == "install"
    assert not state.finished


def test_a_finished_run_has_its_outcome(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.append("deploy-a", "run", "started", {"kind": "deploy"})
    journal.append("deploy-a", "run", "failed", {"error": "smoke failed"})
    state = journal.last_run()
    assert state is not None and state.finished and state.outcome == "failed"


def test_last_run_can_be_limited_to_one_kind(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.append("deploy-a", "run", "started", {"kind": "deploy"})
    journal.append("rollback-b", "run", "started", {"kind": "rollback"})
    deploy, rollback = journal.last_run("deploy"), journal.last_run("rollback")
    assert deploy is not None and deploy.deploy_id == "deploy-a"
    assert rollback is not None and rollback.deploy_id == "rollback-b"
    assert journal.last_run("nothing") is None


def test_a_torn_last_line_is_ignored_and_the_next_append_stays_readable(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.append("deploy-a", "run", "started", {"kind": "deploy"})
    with journal.path.open("a", encoding="utf-8") as handle:
        handle.write('{"ts": "2024-01-01", "deploy_id": "deploy-a", "pha')  # killed mid-write
    journal.append("deploy-a", "install", "started")
    records = list(journal.records())
    assert [r.phase for r in records] == ["run", "install"]


def test_a_phase_rerun_on_resume_reports_its_latest_status(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    journal.append("d", "run", "started", {"kind": "deploy"})
    journal.append("d", "activate", "started")
    journal.append("d", "activate", "started", {"resumed": True})
    journal.append("d", "activate", "done", {"slot": "dhash-green"})
    state = journal.run("d")
    assert state is not None
    assert state.status_of("activate") == "done"
    assert state.detail_of("activate") == {"resumed": True, "slot": "dhash-green"}
    assert state.interrupted_phase is None


def test_missing_journal_reads_as_empty(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    assert list(journal.records()) == []
    assert journal.last_run() is None


def test_unknown_status_is_rejected_when_parsing() -> None:
    with pytest.raises(ValueError, match="status"):
        JournalRecord.from_mapping(
            {"ts": "t", "deploy_id": "d", "phase": "p", "status": "maybe", "detail": {}}
        )


def test_run_ids_are_unique_and_name_their_kind() -> None:
    ids = {new_run_id("deploy") for _ in range(50)}
    assert len(ids) == 50
    assert all(i.startswith("deploy-") for i in ids)
