"""``release status``'s "last deploy": the last run that changed the release, a deploy or a
promoted canary (an aborted canary changed nothing), described by the deploy's rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.environments import Environment
from dhash_rollout.runs.journal import Journal, PhaseState, RunState, Status
from dhash_rollout.runs.release_change import describe_change, last_change
from dhash_service.errors import CheckFailed

PASSED = PhaseState("done", {"verdict": "passed", "reason": "", "polls": 12})
FAILED = PhaseState("failed", {"verdict": "failed", "reason": "p95HashTime = 900 > 250"})
SWITCHED = PhaseState("done", {"previous": "1.0.0"})


def _deploy(run_id: str, version: str = "1.0.0") -> RunState:
    phases = {"activate": SWITCHED, "monitor": PhaseState("skipped", {"reason": "--no-monitor"})}
    return RunState(run_id, "deploy", {"version": version}, phases, "done")


def _canary(
    run_id: str, phases: dict[str, PhaseState], outcome: Status | None, version: str | None
) -> RunState:
    canary = {"canary": PhaseState("done", {"outcome": "x"}), **phases}
    return RunState(run_id, "canary", {"version": version, "env": "production"}, canary, outcome)


PROMOTED = _canary("canary-2", {"activate": SWITCHED, "monitor": PASSED}, "done", "2.0.0")
ABORTED = _canary("canary-3", {}, "failed", "2.0.0")
ROLLED_BACK = _canary("canary-4", {"activate": SWITCHED, "monitor": FAILED}, "failed", "2.0.0")
BUILT = _canary(  # started with --source: the version is the install's
    "canary-5",
    {"install": PhaseState("done", {"version": "3.0.0"}), "activate": SWITCHED, "monitor": PASSED},
    "done",
    None,
)
ROLLBACK = RunState("rollback-1", "rollback", {}, {}, "done")


@pytest.mark.parametrize(
    ("runs", "last"),
    [
        ([], None),
        ([_deploy("deploy-1")], "deploy-1"),
        ([_deploy("deploy-1"), PROMOTED], "canary-2"),
        ([_deploy("deploy-1"), PROMOTED, ABORTED], "canary-2"),  # the abort changed nothing
        ([_deploy("deploy-1"), ABORTED], "deploy-1"),
        ([PROMOTED, _deploy("deploy-9", "3.0.0")], "deploy-9"),
        ([_deploy("deploy-1"), ROLLED_BACK, ROLLBACK], "canary-4"),  # rollbacks: as for deploys
    ],
)
def test_the_last_change_is_the_last_deploy_or_promoted_canary(
    runs: list[RunState], last: str | None
) -> None:
    found = last_change(runs)
    assert (found.deploy_id if found else None) == last


@pytest.mark.parametrize(
    ("run", "state", "line"),
    [
        (PROMOTED, "verified",
         "canary of 2.0.0, promoted (canary-2): verified, quality gates passed (12 polls)"),
        (ROLLED_BACK, "failed",
         "canary of 2.0.0, promoted (canary-4): quality gates failed (p95HashTime = 900 > 250)"),
        (BUILT, "verified", "canary of 3.0.0, promoted (canary-5): verified"),
        (_deploy("deploy-1"), "unmonitored",
         "deploy of 1.0.0 (deploy-1): not monitored (--no-monitor) — not verified"),
        (None, "none", "no deploy in the journal"),
    ],
)  # fmt: skip
def test_a_promoted_canary_is_described_by_the_deploys_rule_under_its_own_name(
    run: RunState | None, state: str, line: str
) -> None:
    seen = describe_change(run, monitor_alive=False)
    assert seen.state == state
    assert seen.line.startswith(line), seen.line


def test_check_daily_fails_on_a_promoted_canary_whose_window_was_cut_short(
    tmp_path: Path,
) -> None:
    from dhash_rollout.checks.daily import check_last_deploy

    env = Environment(name="production", root=tmp_path, port=8080,
                      url="http://127.0.0.1:8080", database_url="sqlite://")  # fmt: skip
    journal = Journal.for_root(tmp_path)
    journal.append("deploy-1", "run", "started", {"version": "1.0.0", "env": "production"})
    journal.append("deploy-1", "monitor", "done", {"verdict": "passed", "polls": 12})
    journal.append("deploy-1", "run", "done")
    assert "verified" in check_last_deploy(env)
    journal.append("canary-2", "run", "started", {"version": "2.0.0", "env": "production"})
    journal.append("canary-2", "canary", "done", {"outcome": "promoted"})
    journal.append("canary-2", "activate", "done", {"previous": "1.0.0"})
    journal.append("canary-2", "monitor", "started")  # the controller died in its window
    with pytest.raises(CheckFailed, match=r"canary of 2\.0\.0, promoted .* not verified"):
        check_last_deploy(env)
