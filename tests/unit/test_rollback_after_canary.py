"""A promoted canary put its release in service like a deploy: a rollback (the canary's own
automatic one after its monitor failed it, or a later `dhash rollback`) goes back to the release
it replaced. Found on real processes: the rollback saw no deploy of the promoted release and
rolled back nothing ("nothing had changed")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dhash_rollout.rollback.run import _deploy_that_made, _footprint
from dhash_rollout.runs.journal import Journal


def _run(journal: Journal, run_id: str, kind: str, params: dict[str, Any], *,
         phases: list[tuple[str, str, dict[str, Any]]], outcome: str | None) -> None:  # fmt: skip
    journal.append(run_id, "run", "started", {"kind": kind, **params})
    for phase, status, detail in phases:
        journal.append(run_id, phase, status, detail)  # type: ignore[arg-type]
    if outcome:
        journal.append(run_id, "run", outcome)  # type: ignore[arg-type]


SWITCH = ("activate", "done", {"previous": "1.0.0"})
BACKUP = ("backup", "done", {"path": "/nowhere/b.zip"})


@pytest.mark.parametrize(
    ("canary_phases", "canary_outcome", "made_by"),
    [
        ([BACKUP, SWITCH], None, "canary-2"),  # its monitor is failing it now: inside its run
        ([BACKUP, SWITCH], "done", "canary-2"),  # promoted and watched
        ([BACKUP], "failed", None),  # aborted: it never switched
        ([BACKUP, SWITCH], "failed", None),  # failed after its switch: already undone
    ],
)
def test_a_promoted_canary_is_what_made_its_release_current(
    tmp_path: Path, canary_phases: list[tuple[str, str, dict[str, Any]]],
    canary_outcome: str | None, made_by: str | None,
) -> None:  # fmt: skip
    journal = Journal(tmp_path / "journal.jsonl")
    _run(journal, "deploy-1", "deploy", {"version": "1.0.0", "from_version": None},
         phases=[SWITCH], outcome="done")  # fmt: skip
    _run(journal, "canary-2", "canary", {"version": "2.0.0", "from_version": "1.0.0"},
         phases=canary_phases, outcome=canary_outcome)  # fmt: skip
    found = _deploy_that_made(journal, "2.0.0")
    assert (found.deploy_id if found else None) == made_by
    if found is not None:
        footprint = _footprint(found)
        assert footprint is not None
        assert (footprint.version, footprint.from_version) == ("2.0.0", "1.0.0")
    made_first = _deploy_that_made(journal, "1.0.0")
    assert made_first is not None and made_first.deploy_id == "deploy-1"


def test_a_canary_built_from_a_source_is_named_by_its_install(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    _run(journal, "canary-3", "canary", {"version": None, "from_version": "1.0.0"},
         phases=[("install", "done", {"version": "3.0.0"}), SWITCH], outcome="done")  # fmt: skip
    found = _deploy_that_made(journal, "3.0.0")
    assert found is not None and found.deploy_id == "canary-3"
    footprint = _footprint(found)
    assert footprint is not None and footprint.version == "3.0.0"
