"""Deploy and rollback plans as plain data: facts in, steps out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dhash_rollout.deploy.plan import DEPLOY_PHASES, BackupFact, DeployFacts, plan_deploy
from dhash_rollout.rollback.decision import ROLLBACK_PHASES, RollbackFacts, plan_rollback
from dhash_rollout.runs.plan import render_plan

HOUR = 3600.0

BASE = DeployFacts(
    env="production",
    url="http://127.0.0.1:18080",
    root="/srv/dhash/production",
    version="2.0.0",
    source="dir:/work/main",
    release_installed=False,
    current_version="1.0.0",
    schema_revision="0001",
    latest_backup=None,
    backup_max_age_seconds=HOUR,
    channels=("file",),
)


def test_a_plan_lists_every_phase_in_the_guarded_order() -> None:
    plan = plan_deploy(BASE)
    assert tuple(s.phase for s in plan.steps) == DEPLOY_PHASES
    assert DEPLOY_PHASES.index("backup") < DEPLOY_PHASES.index("migrate")
    assert DEPLOY_PHASES.index("migrate") < DEPLOY_PHASES.index("activate")


# (changes to the base facts, phase, expected run, words expected in the action or reason)
DEPLOY_CASES: list[tuple[str, dict[str, Any], str, bool, str]] = [
    ("no backup at all", {}, "backup", True, "no verified backup"),
    (
        "fresh verified backup",
        {"latest_backup": BackupFact("backups/dhash_production_x.zip", 600)},
        "backup",
        False,
        "10 min old",
    ),
    (
        "stale verified backup",
        {"latest_backup": BackupFact("backups/dhash_production_x.zip", 2 * HOUR)},
        "backup",
        True,
        "120 min old",
    ),
    ("release to build", {}, "install", True, "build and install release 2.0.0"),
    ("release installed", {"release_installed": True}, "install", False, "already installed"),
    ("first deploy", {"current_version": None}, "activate", True, "beside nothing"),
    ("switch", {}, "activate", True, "stop 1.0.0 gracefully"),
    ("same version again", {"current_version": "2.0.0"}, "activate", True, "already current"),
    ("monitor not built", {}, "monitor", False, "not available yet"),
    ("--no-monitor", {"no_monitor": True, "monitor_available": True}, "monitor", False, "--no"),
    ("monitor available", {"monitor_available": True}, "monitor", True, "quality gates"),
    ("empty database", {"schema_revision": None}, "migrate", True, "an empty database"),
    (
        "resume skips a done backup",
        {"resumed_from": "deploy-x", "resumed_done": frozenset({"backup", "notify_start"})},
        "backup",
        False,
        "interrupted run deploy-x",
    ),
    (
        "resume repeats idempotent phases",
        {"resumed_from": "deploy-x", "resumed_done": frozenset({"activate"})},
        "activate",
        True,
        "stop 1.0.0",
    ),
    (
        "resume does not resend the start notice",
        {"resumed_from": "deploy-x", "resumed_done": frozenset({"notify_start"})},
        "notify_start",
        False,
        "interrupted run",
    ),
]


@pytest.mark.parametrize(
    ("changes", "phase", "run", "words"),
    [c[1:] for c in DEPLOY_CASES],
    ids=[c[0] for c in DEPLOY_CASES],
)
def test_deploy_step_decisions(changes: dict[str, Any], phase: str, run: bool, words: str) -> None:
    step = plan_deploy(replace(BASE, **changes)).step(phase)
    assert step.run is run
    assert words in f"{step.action} [{step.reason}]"


def test_rendered_plan_numbers_each_phase_and_says_nothing_runs() -> None:
    text = render_plan(plan_deploy(BASE))
    assert "nothing is executed" in text.splitlines()[0]
    assert len(text.strip().splitlines()) == 1 + len(DEPLOY_PHASES)
    assert "SKIP  watch the quality gates  [the monitor is not available yet]" in text


ROLLBACK_BASE = RollbackFacts(
    env="production",
    url="http://127.0.0.1:18080",
    current_version="2.0.0",
    target_version="1.0.0",
    current_revision="0002",
    target_revision="0001",
    downgrade_reversible=True,
    database_ok=True,
    backup="backups/dhash_production_20240101_120000.zip",
    backup_requested=False,
    channels=("file",),
    reason="emergency-rollback",
)

# (changes, phases that run)
ROLLBACK_CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    (
        "reversible schema: switch then downgrade, no restore",
        {},
        {"activate", "downgrade"},
    ),
    (
        "same schema: switch only",
        {"target_revision": "0002"},
        {"activate"},
    ),
    (
        "irreversible migration: restore keeping later writes",
        {"downgrade_reversible": False},
        {"export_writes", "restore", "reapply_writes", "activate"},
    ),
    (
        "damaged database: restore",
        {"database_ok": False, "target_revision": "0002"},
        {"export_writes", "restore", "reapply_writes", "activate"},
    ),
    (
        "named backup: restore even though a downgrade would do",
        {"backup_requested": True},
        {"export_writes", "restore", "reapply_writes", "activate"},
    ),
    (
        "named backup on the current release: restore and restart it",
        {"backup_requested": True, "target_version": "2.0.0", "target_revision": "0002"},
        {"export_writes", "restore", "reapply_writes", "activate"},
    ),
    (
        "already on the target: nothing to switch",
        {"current_version": "1.0.0", "current_revision": "0001"},
        set(),
    ),
]


@pytest.mark.parametrize(
    ("changes", "expected"),
    [c[1:] for c in ROLLBACK_CASES],
    ids=[c[0] for c in ROLLBACK_CASES],
)
def test_rollback_decisions(changes: dict[str, Any], expected: set[str]) -> None:
    plan = plan_rollback(replace(ROLLBACK_BASE, **changes))
    assert tuple(s.phase for s in plan.steps) == ROLLBACK_PHASES
    always = {"lock", "notify_start", "health", "smoke", "notify_result"}
    assert set(plan.phases_to_run) == always | expected


def test_rollback_without_a_backup_when_one_is_needed_warns() -> None:
    plan = plan_rollback(replace(ROLLBACK_BASE, downgrade_reversible=False, backup=None))
    assert any("no backup is available" in w for w in plan.warnings)


def test_rollback_with_no_previous_release_warns_and_switches_nothing() -> None:
    plan = plan_rollback(replace(ROLLBACK_BASE, target_version=None, target_revision=None))
    assert not plan.step("activate").run
    assert any("no previous release" in w for w in plan.warnings)


def test_rollback_notice_carries_reason_and_trigger() -> None:
    plan = plan_rollback(replace(ROLLBACK_BASE, trigger="automatic"))
    assert "emergency-rollback" in plan.step("notify_start").action
    assert "automatic" in plan.step("notify_start").action


def test_a_first_deploy_has_no_database_to_back_up() -> None:
    step = plan_deploy(replace(BASE, database_exists=False, schema_revision=None)).step("backup")
    assert not step.run
    assert step.reason == "there is no database yet"


def test_a_refused_rollback_dry_run_shows_every_step_skipped_and_no_target() -> None:
    """The real run is refused before it locks or notifies: its dry run must not say RUN."""
    plan = plan_rollback(replace(ROLLBACK_BASE, target_version=None, target_revision=None))
    text = render_plan(plan.refused("nothing to roll back to"))
    lines = text.splitlines()
    assert lines[0] == "rollback production (no target): plan (nothing is executed)"
    steps = [line for line in lines if line[:4].strip().rstrip(".").isdigit()]
    assert len(steps) == len(ROLLBACK_PHASES)
    assert all(" SKIP " in s and "[refused: nothing to roll back to]" in s for s in steps)


def test_restoring_a_backup_under_the_serving_release_starts_it_again_not_beside_itself() -> None:
    facts = replace(
        ROLLBACK_BASE, backup_requested=True, target_version="2.0.0", target_revision="0002"
    )
    step = plan_rollback(facts).step("activate")
    assert step.run and step.action == "start 2.0.0 again on the restored database"
