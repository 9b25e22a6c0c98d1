"""``kill -9`` at known points of ``dhash backup create``: never a valid-looking backup, and the
next run succeeds and removes what the killed one left."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from dhash_rollout.backup import create_backup, list_backups
from dhash_rollout.environments import load_environment
from tests.integration.backup_support import (
    PausedRun,
    assert_restores,
    make_sqlite_db,
    run_cli,
    sqlite_content,
    write_environments,
)

GUIDE_CHECK = (
    "LATEST_BACKUP=$(ls -1 backups/dhash_*.zip | sort -r | head -n1)\n"
    'sha256sum -c "${LATEST_BACKUP}.sha256"\n'
)


def guide_check(cwd: Path) -> int:
    return subprocess.run(
        ["bash", "-c", GUIDE_CHECK], cwd=cwd, capture_output=True, check=False
    ).returncode


@pytest.mark.slow
@pytest.mark.matrix(keep=2)  # make test: 2 kill points a run, rotating; make test-full: all 6
@pytest.mark.parametrize(
    "point",
    [
        "dump-10",
        "dump-50",
        "dump-90",
        "before-zip-rename",
        "after-zip-rename",
        "before-checksum-rename",
    ],
)
def test_backup_killed_at_any_point_leaves_no_valid_backup_and_next_run_succeeds(
    tmp_path: Path, point: str
) -> None:
    write_environments(tmp_path, {"production": None})
    db = make_sqlite_db(tmp_path / "var/production/shared/data/dhash.sqlite3", rows=4000)
    backups = tmp_path / "backups"

    PausedRun("backup", "create", "--env", "production", cwd=tmp_path, point=point).kill()

    assert list_backups(backups) == []
    assert guide_check(tmp_path) != 0
    left = {p.name for p in backups.iterdir()} - {".locks"}
    assert left, "the kill should have left something to clean up"

    created = create_backup(load_environment("production", tmp_path), backups).path
    assert {p.name for p in backups.iterdir()} == {
        ".locks",
        ".verified",
        created.name,
        created.name + ".sha256",
    }
    assert guide_check(tmp_path) == 0
    assert_restores(created, sqlite_content(db), tmp_path / "scratch", "production")


def test_fault_hook_is_inert_without_the_setting(tmp_path: Path) -> None:
    write_environments(tmp_path, {"production": None})
    make_sqlite_db(tmp_path / "var/production/shared/data/dhash.sqlite3", rows=10)
    done = run_cli("backup", "create", "--env", "production", cwd=tmp_path)
    assert done.returncode == 0 and "dhash-fault" not in done.stderr
    [backup] = list_backups(tmp_path / "backups")
    assert_restores(
        backup.path,
        sqlite_content(tmp_path / "var/production/shared/data/dhash.sqlite3"),
        tmp_path / "scratch",
        "production",
    )
