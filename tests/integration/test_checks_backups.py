"""Preflight, weekly verification and maintenance on real backups, dry runs and files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from dhash_rollout.backup import create_backup, list_backups
from dhash_rollout.backup.scratch import scratch_copy
from dhash_rollout.checks.daily import run_weekly
from dhash_rollout.checks.maintenance import run_maintenance
from dhash_rollout.checks.preflight import run_preflight
from dhash_rollout.checks.report import CheckRun
from dhash_rollout.deploy import DeployRequest
from dhash_rollout.deploy import dry_run as deploy_dry_run
from dhash_rollout.environments import Environment, load_environment
from dhash_rollout.migrate import dry_run as migrate_dry_run
from dhash_rollout.migrate import rehearse, upgrade
from tests.support.live_server import DHASH
from tests.support.release_builds import CHECKOUT, write_environments

APPROVALS = {
    "env": "production",
    "approvers": [{"name": "alice", "role": "SRE"}, {"name": "bob", "role": "developer"}],
    "deployOperator": {"name": "carol", "signedOff": True},
}
DAY = 86400


def _environment(workdir: Path) -> Environment:
    write_environments(workdir)
    env = load_environment("production", workdir)
    env.data_dir.mkdir(parents=True)
    upgrade(env.database_url)
    return env


def _backup(env: Environment, workdir: Path, age: timedelta = timedelta(0)) -> Path:
    when = datetime.now(UTC) - age
    return create_backup(env, workdir / "backups", clock=lambda: when).path


def _passed_log(path: Path, run: str, version: str, env: str = "production") -> None:
    check = CheckRun(run, meta={"env": env, "version": version})
    check.record("everything", True, "fine")
    check.finish(path)


def _planned(workdir: Path) -> str:
    return (workdir / "deploy-dryrun.log").read_text().splitlines()[0].split()[2].rstrip(":")


def _ready_for_production(workdir: Path) -> Environment:
    """Every artifact the guide's checklist names, each made by the code that makes it."""
    for name in ("scripts", "src", "requirements", "pyproject.toml", "README.md"):
        (workdir / name).symlink_to(CHECKOUT / name)
    env = _environment(workdir)
    _backup(env, workdir, timedelta(days=2))
    _backup(env, workdir)
    assert deploy_dry_run(DeployRequest(env="production", dry_run=True, base=workdir)).ok
    assert migrate_dry_run(env.database_url, workdir / "migrate-dryrun.log").ok
    planned = _planned(workdir)
    _passed_log(workdir / "postdeploy-smoketests.log", "smoke", planned)
    _passed_log(workdir / "test_logging.log", "validate-logging", planned)
    (workdir / "premerge_artifacts").mkdir()
    (workdir / "premerge_artifacts" / "junit.xml").write_text("<testsuites/>")
    approvals = {**APPROVALS, "version": planned, "date": datetime.now(UTC).date().isoformat()}
    (workdir / "approvals.json").write_text(json.dumps(approvals))
    return env


def _failed(workdir: Path, env: Environment) -> dict[str, str]:
    report = run_preflight(env, workdir=workdir)
    return {r.name: r.detail for r in report.results if not r.ok}


def test_preflight_passes_with_every_artifact_and_names_each_one_missing(tmp_path: Path) -> None:
    env = _ready_for_production(tmp_path)
    report = run_preflight(env, workdir=tmp_path)
    assert report.ok, report.summary()
    assert len(report.results) == 9  # the eight artefacts and who listens on the port
    missing = {
        "deploy-dryrun.log": ("deploy dry-run log", "deploy-dryrun.log is missing"),
        "migrate-dryrun.log": ("migrate dry-run log", "migrate-dryrun.log is missing"),
        "postdeploy-smoketests.log": ("smoke test log", "postdeploy-smoketests.log is missing"),
        "test_logging.log": ("logging validation log", "test_logging.log is missing"),
        "premerge_artifacts": ("CI artifacts", "premerge_artifacts/ is missing"),
        "approvals.json": ("approvals", "approvals.json is missing"),
    }
    aside = tmp_path / "aside"
    aside.mkdir()
    for name, (check, message) in missing.items():
        (tmp_path / name).rename(aside / name)
        try:
            assert _failed(tmp_path, env) == {check: message}
        finally:
            (aside / name).rename(tmp_path / name)
    backups = tmp_path / "backups"
    backups.rename(aside / "backups")
    assert _failed(tmp_path, env) == {
        "latest backup verifies": "no production backups in backups/ "
        "(make one: ./scripts/backup_dhash.sh --env production)"
    }


def test_preflight_before_the_first_deploy_needs_no_backup_of_a_database_not_made_yet(
    tmp_path: Path,
) -> None:
    """Else the first production deploy could never pass its enforced checklist: there is no
    database to back up until that deploy creates it."""
    env = _ready_for_production(tmp_path)
    shutil.rmtree(tmp_path / "backups")
    Path(make_url(env.database_url).database or "").unlink()

    report = run_preflight(env, workdir=tmp_path)

    assert report.ok, report.summary()
    [backup] = [r for r in report.results if r.name == "latest backup verifies"]
    assert backup.detail == "no production database yet: nothing to back up before its first deploy"


def test_preflight_refuses_a_corrupt_newest_backup_failed_runs_and_weak_approvals(
    tmp_path: Path,
) -> None:
    env = _ready_for_production(tmp_path)
    newest = list_backups(tmp_path / "backups", "production")[0].path
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    failing = CheckRun("smoke", meta={"env": "staging"})
    failing.record("known hash", False, "drift")
    failing.finish(tmp_path / "postdeploy-smoketests.log")
    approvals = {**APPROVALS, "approvers": APPROVALS["approvers"][:1]}
    (tmp_path / "approvals.json").write_text(json.dumps(approvals))
    (tmp_path / "migrate-dryrun.log").write_text(
        (tmp_path / "migrate-dryrun.log").read_text().replace("result: OK", "result: FAILED")
    )
    failed = _failed(tmp_path, env)
    assert set(failed) == {
        "latest backup verifies",
        "smoke test log",
        "approvals",
        "migrate dry-run log",
    }
    assert "SHA-256 mismatch" in failed["latest backup verifies"]
    assert failed["smoke test log"].startswith(
        "postdeploy-smoketests.log records a failed run (staging at "
    )
    assert failed["smoke test log"].endswith("): known hash")
    assert failed["approvals"] == "1 distinct approver(s), 2 required"
    assert failed["migrate dry-run log"] == "migrate-dryrun.log records result: FAILED"


def test_preflight_does_not_take_a_rehearsed_downgrade_for_the_deploys_migration(
    tmp_path: Path,
) -> None:
    env = _ready_for_production(tmp_path)
    rehearsal = migrate_dry_run(
        env.database_url, tmp_path / "migrate-dryrun.log", target="base", direction="downgrade"
    )
    assert rehearsal.ok
    assert _failed(tmp_path, env) == {
        "migrate dry-run log": "migrate-dryrun.log rehearses a downgrade, not the deploy's "
        "upgrade: run ./scripts/migrate_dhash.sh --dry-run --env production"
    }


def test_preflight_does_not_take_a_rehearsal_on_a_copy_for_the_live_dry_run(
    tmp_path: Path,
) -> None:
    """A `migrate --dry-run --source` log put in place of migrate-dryrun.log: a copy of another
    database was migrated, which says nothing of this one."""
    env = _ready_for_production(tmp_path)
    live = Path(env.database_url.removeprefix("sqlite:///"))
    with scratch_copy(str(live)) as copy:
        rehearse(
            copy.url,
            tmp_path / "migrate-dryrun.log",
            source=copy.label,
            source_revision=copy.source_revision,
        )
    assert _failed(tmp_path, env) == {
        "migrate dry-run log": f"migrate-dryrun.log is a rehearsal on a copy of SQLite database "
        f"{live}, not a dry run of production's database: run ./scripts/migrate_dhash.sh "
        "--dry-run --env production"
    }


def test_a_deploys_preflight_wants_the_dry_run_of_the_version_it_deploys(tmp_path: Path) -> None:
    env = _ready_for_production(tmp_path)
    planned = _planned(tmp_path)
    assert run_preflight(env, workdir=tmp_path, version=planned).ok
    report = run_preflight(env, workdir=tmp_path, version="9.9.9")
    failed = {r.name: r.detail for r in report.results if not r.ok}
    assert failed == {
        "deploy dry-run log": f"deploy-dryrun.log plans {planned}, not the 9.9.9 being deployed: "
        "run ./scripts/deploy_dhash.sh --dry-run --env production with this deploy's options",
        # issue 12 item 5: the checkout's migrations do not clear another release's
        "migrate dry-run log": f"migrate-dryrun.log rehearses the migrations of {planned}, not "
        "of the 9.9.9 being deployed: install it (dhash release install --env production "
        "--source ...) and run its own `dhash migrate --dry-run --env production`",
        "smoke test log": f"postdeploy-smoketests.log tested {planned}, not 9.9.9",
        "logging validation log": f"test_logging.log tested {planned}, not 9.9.9",
        "approvals": f"the approvals name {planned}, not the 9.9.9 being deployed",
    }


def test_a_staging_or_stale_smoke_log_does_not_clear_a_production_deploy(tmp_path: Path) -> None:
    """Issue 12 item 5: a staging smoke log cleared a production deploy."""
    env = _ready_for_production(tmp_path)
    planned = _planned(tmp_path)
    smoke = tmp_path / "postdeploy-smoketests.log"
    _passed_log(smoke, "smoke", planned, env="staging")
    failed = {
        r.name: r.detail
        for r in run_preflight(env, workdir=tmp_path, version=planned).results
        if not r.ok
    }
    assert failed == {
        "smoke test log": "postdeploy-smoketests.log is a run against 'staging', not 'production'"
    }
    _passed_log(smoke, "smoke", planned)
    stale = time.time() - 2 * DAY
    lines = smoke.read_text().splitlines()
    old = datetime.fromtimestamp(stale, UTC).isoformat(timespec="seconds")
    smoke.write_text(
        "\n".join(json.dumps({**json.loads(line), "timestamp": old}) for line in lines) + "\n"
    )
    failed = {
        r.name: r.detail
        for r in run_preflight(env, workdir=tmp_path, version=planned).results
        if not r.ok
    }
    assert failed == {"smoke test log": "postdeploy-smoketests.log is 48.0 h old (over 24)"}


def test_preflight_command_exits_1_with_a_table_naming_the_failure(tmp_path: Path) -> None:
    _ready_for_production(tmp_path)
    (tmp_path / "approvals.json").write_text("{not json")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    done = subprocess.run(
        [DHASH, "preflight", "--env", "production"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "approvals.json is not valid JSON" in done.stderr
    assert "latest backup" in done.stdout and "PASS" in done.stdout and "FAIL" in done.stdout


@pytest.mark.parametrize("command", ["preflight", "maintenance"])
def test_a_workdir_that_does_not_exist_is_a_usage_error(tmp_path: Path, command: str) -> None:
    """Not a table of "missing" artifacts (or nothing to archive) for a mistyped path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    done = subprocess.run(
        [DHASH, command, "--env", "production", "--workdir", str(tmp_path / "nope")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "is not a directory" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == "" and not (tmp_path / "nope").exists()


def test_weekly_verifies_the_newest_seven_and_names_the_corrupt_one(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    made = [_backup(env, tmp_path, timedelta(days=d)) for d in range(8, 0, -1)]  # oldest first
    corrupt = made[3]
    corrupt.write_bytes(corrupt.read_bytes()[:-10] + b"0123456789")
    report = run_weekly(env, workdir=tmp_path)
    assert [r.name for r in report.results] == [p.name for p in made[1:]]
    assert not report.ok
    assert [r.name for r in report.failures] == [corrupt.name]
    assert "SHA-256 mismatch" in report.failures[0].detail


def test_weekly_without_backups_fails(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    report = run_weekly(env, workdir=tmp_path)
    assert not report.ok
    assert report.summary() == "backups: no production backups in backups/"


def _log(path: Path, days: float) -> Path:
    """A log file last written ``days`` ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"event": "x"}\n')
    then = time.time() - days * DAY
    os.utime(path, (then, then))
    return path


@pytest.mark.parametrize("dry_run", [True, False])
def test_maintenance_prunes_old_backups_and_archives_closed_logs(
    tmp_path: Path, dry_run: bool
) -> None:
    env = _environment(tmp_path)
    backups = {age: _backup(env, tmp_path, timedelta(days=age)) for age in (45, 31, 20, 1)}
    logs = tmp_path / "logs"
    old_deploy = _log(logs / "deploy_production_20240101_120000.log", days=10)
    recent = _log(logs / "monitor_production_20240301_120000.log", days=0)
    service_logs = env.shared_dir / "logs"
    live = _log(service_logs / "blue.log", days=40)  # an idle service's current log
    rotated = _log(service_logs / "blue.log.1", days=40)
    with live.open("a"):  # the process manager holds the live one open
        report = run_maintenance(env, workdir=tmp_path, dry_run=dry_run)
    assert report.ok, report.summary()
    details = [r.detail for r in report.results]
    left = {p.name for p in (tmp_path / "backups").glob("*.zip")}
    if dry_run:
        assert details[0].startswith("would delete 2 backup(s) older than 30 days")
        assert left == {p.name for p in backups.values()}
        assert old_deploy.exists() and rotated.exists()
        assert "would archive 1 file(s): deploy_production_20240101_120000.log" in details[1]
    else:
        assert details[0].startswith("deleted 2 backup(s) older than 30 days")
        assert left == {backups[20].name, backups[1].name}
        assert not old_deploy.exists() and not rotated.exists()
        assert (logs / "archive" / f"{old_deploy.name}.gz").exists()
        assert (service_logs / "archive" / "blue.log.1.gz").exists()
    assert live.exists() and recent.exists()


def test_maintenance_leaves_a_young_backup_set_alone(tmp_path: Path) -> None:
    env = _environment(tmp_path)
    kept = _backup(env, tmp_path, timedelta(days=3))
    report = run_maintenance(env, workdir=tmp_path)
    assert report.ok
    assert report.results[0].detail.startswith("deleted 0 backup(s)")
    assert kept.exists()
