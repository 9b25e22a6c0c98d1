"""Disk full and permission denied: a clear non-zero exit, no temp file, older backups intact."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from dhash_rollout.backup import create_backup, list_backups, restore_backup, verify_backup
from dhash_rollout.environments import load_environment
from dhash_service.errors import DhashError
from tests.integration.backup_support import (
    DHASH,
    assert_restores,
    cli_env,
    env_db,
    make_sqlite_db,
    sqlite_content,
    sqlite_env,
    write_environments,
)


def _grow(db: Path, megabytes: int) -> None:
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE IF NOT EXISTS blobs (id INTEGER PRIMARY KEY, data BLOB)")
    conn.executemany(
        "INSERT INTO blobs (data) VALUES (?)", [(os.urandom(1 << 20),) for _ in range(megabytes)]
    )
    conn.commit()
    conn.close()


def _only_backups(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir() if not p.name.startswith(".")}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB filesystem (tmpfs): writes beyond it fail with ENOSPC."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_fails_cleanly_and_keeps_older_backups(tmp_path: Path, small_disk: Path) -> None:
    write_environments(tmp_path, {"production": None})
    env = load_environment("production", tmp_path)
    db = make_sqlite_db(env_db(env), rows=200)
    older = create_backup(env, small_disk)
    at_older = sqlite_content(db)
    _grow(db, 3)

    with pytest.raises(DhashError) as err:
        create_backup(env, small_disk)
    assert "No space left on device" in err.value.message or "disk is full" in err.value.message
    assert (
        "older backups are untouched" in err.value.message
        or "no backup was written" in err.value.message
    )

    cli = subprocess.run(
        [DHASH, "backup", "create", "--env", "production", "--backup-dir", str(small_disk)],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert cli.returncode == 1 and "Traceback" not in cli.stderr and "dhash: error:" in cli.stderr

    assert _only_backups(small_disk) == {older.path.name, older.path.name + ".sha256"}
    assert not [p for p in small_disk.iterdir() if ".tmp" in p.name]
    assert [b.path for b in list_backups(small_disk)] == [older.path]
    verify_backup(older.path)
    assert_restores(older.path, at_older, tmp_path / "scratch", "production")


def test_permission_denied_fails_cleanly_and_keeps_older_backups(tmp_path: Path) -> None:
    write_environments(tmp_path, {"production": None})
    env = load_environment("production", tmp_path)
    db = make_sqlite_db(env_db(env), rows=200)
    backups = tmp_path / "backups"
    older = create_backup(env, backups)
    backups.chmod(0o555)
    command = [DHASH, "backup", "create", "--env", "production"]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("root without setpriv: cannot drop CAP_DAC_OVERRIDE to get EACCES")
        caps = "-dac_override,-dac_read_search"
        command = ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}", "--", *command]
    try:
        done = subprocess.run(
            command,
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        backups.chmod(0o755)
    assert done.returncode == 1, done.stderr
    assert "Permission denied" in done.stderr and "Traceback" not in done.stderr
    assert _only_backups(backups) == {older.path.name, older.path.name + ".sha256"}
    assert not [p for p in backups.iterdir() if ".tmp" in p.name]
    assert_restores(older.path, sqlite_content(db), tmp_path / "scratch", "production")


def test_restore_larger_than_the_free_space_is_refused_and_the_live_database_kept(
    tmp_path: Path, small_disk: Path
) -> None:
    source = sqlite_env(tmp_path / "var" / "production")
    make_sqlite_db(env_db(source), rows=200)
    _grow(env_db(source), 2)
    backup = create_backup(source, tmp_path / "backups").path
    live = sqlite_env(small_disk / "production")  # the same env, on a 1 MiB disk
    make_sqlite_db(env_db(live), rows=100)
    before = sqlite_content(env_db(live))

    with pytest.raises(DhashError, match=r"only [0-9]+ free"):
        restore_backup(backup, live, lock_dir=tmp_path / "locks")

    assert sqlite_content(env_db(live)) == before
    left = [p.name for p in env_db(live).parent.iterdir()]
    assert not [name for name in left if ".tmp" in name or "restore" in name], left
    assert_restores(backup, sqlite_content(env_db(source)), tmp_path / "scratch", "production")
