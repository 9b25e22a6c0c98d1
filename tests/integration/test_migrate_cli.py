"""``dhash migrate`` and the guide's ``./scripts/migrate_dhash.sh``, run as real processes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from dhash_rollout import migrate
from tests.integration.backup_support import REPO, cli_env, run_cli, write_environments


def test_guide_migrate_commands_run_verbatim_from_the_checkout_root(tmp_path: Path) -> None:
    write_environments(tmp_path, {"production": None})
    url = f"sqlite:///{tmp_path / 'var/production/shared/data/dhash.sqlite3'}"
    revisions = [r.revision for r in migrate.migration_status(url).pending]
    migrate.upgrade(url, revisions[0])
    script = str(REPO / "scripts" / "migrate_dhash.sh")

    dry = subprocess.run(
        [script, "--dry-run", "--env", "production"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert dry.returncode == 0, dry.stderr
    log = (tmp_path / "migrate-dryrun.log").read_text()
    assert "result: OK" in log and all(r in log for r in revisions[1:])
    assert migrate.migration_status(url).current == revisions[0]

    real = subprocess.run(
        [script, "--env", "production"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert real.returncode == 0, real.stderr
    assert migrate.migration_status(url).up_to_date


def test_status_downgrade_and_the_pipeline_downgrade_flag(tmp_path: Path) -> None:
    write_environments(tmp_path, {"production": None})
    url = f"sqlite:///{tmp_path / 'var/production/shared/data/dhash.sqlite3'}"
    revisions = [r.revision for r in migrate.migration_status(url).pending]
    migrate.upgrade(url)

    status = run_cli("migrate", "status", "--env", "production", "--json", cwd=tmp_path)
    assert json.loads(status.stdout)["up_to_date"] is True

    down = run_cli(
        "migrate", "downgrade", revisions[0], "--env", "production", "--json", cwd=tmp_path
    )
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["current"] == revisions[0]

    flag = run_cli("migrate", "--env", "production", "--downgrade", "base", cwd=tmp_path)
    assert flag.returncode == 0, flag.stderr
    assert migrate.migration_status(url).current is None

    bad = run_cli("migrate", "downgrade", "no_such_rev", "--env", "production", cwd=tmp_path)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_without_env_the_settings_database_is_used(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'own.sqlite3'}"
    done = run_cli(
        "migrate",
        "--dry-run",
        "--json",
        "--log",
        "dry.log",
        cwd=tmp_path,
        env=cli_env(DHASH_DATABASE_URL=url),
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True and report["pending"] and report["database"] == url
    assert (tmp_path / "dry.log").exists() and not (tmp_path / "own.sqlite3").exists()


def test_failed_dry_run_exits_1_and_says_why(tmp_path: Path) -> None:
    write_environments(tmp_path, {"production": None})
    db = tmp_path / "var/production/shared/data/dhash.sqlite3"
    db.parent.mkdir(parents=True)
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
    conn.execute("INSERT INTO alembic_version VALUES ('from_a_newer_release')")
    conn.commit()
    conn.close()
    done = run_cli("migrate", "--dry-run", "--env", "production", cwd=tmp_path)
    assert done.returncode == 1 and "from_a_newer_release" in done.stderr
    assert "result: FAILED" in (tmp_path / "migrate-dryrun.log").read_text()
    assert os.path.getsize(db) > 0


def test_to_upgrades_to_that_revision_only(tmp_path: Path) -> None:
    """A fleet's expand step: up to the last expand revision, the contract ones left pending."""
    write_environments(tmp_path, {"production": None})
    url = f"sqlite:///{tmp_path / 'var/production/shared/data/dhash.sqlite3'}"
    revisions = [r.revision for r in migrate.migration_status(url).pending]
    up = run_cli("migrate", "--env", "production", "--to", revisions[1], "--json", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert migrate.migration_status(url).current == revisions[1]
    assert [r.revision for r in migrate.migration_status(url).pending] == revisions[2:]


def test_with_json_every_refusal_and_failure_is_one_json_answer(tmp_path: Path) -> None:
    write_environments(tmp_path, {"production": None})
    unknown = run_cli("migrate", "status", "--env", "nosuch", "--json", cwd=tmp_path)
    answer = json.loads(unknown.stdout)
    assert answer["ok"] is False and answer["exit_code"] == unknown.returncode != 0
    assert "nosuch" in answer["error"] and "nosuch" in unknown.stderr

    no_dry = run_cli("migrate", "--source", "x.tar.gz", "--env", "production", "--json",
                     cwd=tmp_path)  # fmt: skip
    assert json.loads(no_dry.stdout)["exit_code"] == no_dry.returncode == 2

    db = tmp_path / "var/production/shared/data/dhash.sqlite3"
    db.parent.mkdir(parents=True)
    import sqlite3

    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
    conn.execute("INSERT INTO alembic_version VALUES ('from_a_newer_release')")
    conn.commit()
    conn.close()
    failed = run_cli("migrate", "--dry-run", "--env", "production", "--json", cwd=tmp_path)
    report = json.loads(failed.stdout)  # one document: the report, no refusal after it
    assert failed.returncode == 1 and report["event"] == "migrate_dry_run"
    assert report["ok"] is False and "from_a_newer_release" in failed.stderr
