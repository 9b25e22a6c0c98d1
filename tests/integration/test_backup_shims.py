"""The guide's ``./scripts/backup_dhash.sh`` maps verbatim onto ``dhash backup create``."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from dhash_rollout.backup import list_backups
from tests.integration.backup_support import (
    REPO,
    assert_restores,
    cli_env,
    make_sqlite_db,
    sqlite_content,
    write_environments,
)

SCRIPT = str(REPO / "scripts" / "backup_dhash.sh")


def test_backup_shim_runs_the_guide_command_and_its_check(tmp_path: Path) -> None:
    write_environments(tmp_path, {"production": None})
    db = make_sqlite_db(tmp_path / "var/production/shared/data/dhash.sqlite3", rows=100)
    guide = (
        f"{SCRIPT} --env production --retention-days 14\n"
        "LATEST_BACKUP=$(ls -1 backups/dhash_*.zip | sort -r | head -n1)\n"
        'sha256sum -c "${LATEST_BACKUP}.sha256"\n'
    )
    done = subprocess.run(
        ["bash", "-euc", guide],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith(": OK")
    [backup] = list_backups(tmp_path / "backups", "production")
    assert_restores(backup.path, sqlite_content(db), tmp_path / "scratch", "production")


def test_shim_passes_exit_codes_through(tmp_path: Path) -> None:
    done = subprocess.run(
        [SCRIPT, "--env", "nowhere"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2 and "unknown environment" in done.stderr


def test_resolver_falls_back_to_dhash_on_path(tmp_path: Path) -> None:
    """A copy of the scripts outside a checkout (no .venv) uses `dhash` from PATH."""
    scripts = tmp_path / "elsewhere" / "scripts"
    (scripts / "lib").mkdir(parents=True)
    for name in ("backup_dhash.sh", "lib/dhash.sh"):
        (scripts / name).write_text((REPO / "scripts" / name).read_text())
    (scripts / "backup_dhash.sh").chmod(0o755)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (fake_bin / "dhash").write_text('#!/bin/sh\necho "fake dhash $*"\n')
    (fake_bin / "dhash").chmod(0o755)
    env = cli_env(PATH=f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    done = subprocess.run(
        [str(scripts / "backup_dhash.sh"), "--env", "production", "--retention-days", "14"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.stdout.strip() == "fake dhash backup create --env production --retention-days 14"
    nothing = subprocess.run(
        [str(scripts / "backup_dhash.sh")],
        cwd=tmp_path,
        env=cli_env(PATH="/usr/bin:/bin"),
        capture_output=True,
        text=True,
        check=False,
    )
    assert nothing.returncode == 127 and "cannot find the dhash command" in nothing.stderr
