"""``dhash restore`` on SQLite: verify first, new file, atomic swap, pre-restore snapshot, and
a restore killed midway leaves the live database exactly as it was."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import pytest

from dhash_rollout.backup import create_backup, restore_backup
from dhash_rollout.backup.catalog import BackupInfo
from dhash_rollout.environments import load_environment
from dhash_service.errors import ConfigError, IntegrityError
from tests.integration.backup_support import (
    PausedRun,
    add_rows,
    assert_restores,
    env_db,
    make_sqlite_db,
    run_cli,
    sqlite_content,
    sqlite_env,
    write_environments,
)


def _diverge(db: Path) -> None:
    """Writes after the backup: the live database no longer equals it."""
    conn = sqlite3.connect(db)
    conn.execute("DELETE FROM images WHERE id % 3 = 0")
    add_rows(conn, 50, start=10_000)
    conn.commit()
    conn.close()


def test_restore_swaps_in_the_backup_and_keeps_a_pre_restore_snapshot(tmp_path: Path) -> None:
    env = sqlite_env(tmp_path / "var" / "production")
    db = make_sqlite_db(env_db(env), rows=1500)
    at_backup = sqlite_content(db)
    info = create_backup(env, tmp_path / "backups")
    _diverge(db)
    before_restore = sqlite_content(db)

    result = restore_backup(info.path, env, compare_content=True)

    assert sqlite_content(db) == at_backup
    assert (
        result.snapshot_path is not None and sqlite_content(result.snapshot_path) == before_restore
    )
    assert result.tables["images"] == 1500 and result.schema_revision == "r1"
    assert result.warnings == () and not result.forced
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)  # live mode kept
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    assert not list(db.parent.glob(".*tmp*"))


def test_restore_over_an_unreadable_live_database_keeps_a_byte_copy_of_it(
    tmp_path: Path,
) -> None:
    env = sqlite_env(tmp_path / "var" / "production")
    db = make_sqlite_db(env_db(env), rows=500)
    at_backup = sqlite_content(db)
    info = create_backup(env, tmp_path / "backups")
    db.with_name(db.name + "-wal").unlink(missing_ok=True)
    wrecked = b"not a database any more " * 200  # what a restore after corruption faces
    db.write_bytes(wrecked)

    result = restore_backup(info.path, env)

    assert sqlite_content(db) == at_backup
    assert result.snapshot_path is not None and result.snapshot_path.read_bytes() == wrecked
    assert len(result.warnings) == 1 and "unreadable" in result.warnings[0]
    assert not list(db.parent.glob(".*tmp*"))


def test_restore_into_an_environment_without_a_database(tmp_path: Path) -> None:
    env = sqlite_env(tmp_path / "var" / "production")
    make_sqlite_db(env_db(env), rows=20)
    info = create_backup(env, tmp_path / "backups")
    fresh = sqlite_env(tmp_path / "elsewhere")
    result = restore_backup(info.path, fresh)
    assert result.snapshot is None
    assert sqlite_content(env_db(fresh)) == sqlite_content(env_db(env))


@pytest.fixture
def corrupt(tmp_path: Path) -> tuple[BackupInfo, Path]:
    env = sqlite_env(tmp_path / "var" / "production")
    db = make_sqlite_db(env_db(env), rows=200)
    info = create_backup(env, tmp_path / "backups")
    assert_restores(info.path, sqlite_content(db), tmp_path / "scratch", "production")
    _diverge(db)
    with zipfile.ZipFile(info.path) as zf:
        stored = zf.getinfo("manifest.json")
    data = bytearray(info.path.read_bytes())
    data[stored.header_offset + 40] ^= 0x20  # inside the manifest's local header name/data
    info.path.write_bytes(bytes(data))
    return info, db


def test_restore_refuses_a_backup_that_fails_verification(
    tmp_path: Path, corrupt: tuple[BackupInfo, Path]
) -> None:
    info, db = corrupt
    live = sqlite_content(db)
    with pytest.raises(IntegrityError) as err:
        restore_backup(info.path, sqlite_env(tmp_path / "var" / "production"))
    assert str(info.path) in err.value.message and "--force" in err.value.message
    assert sqlite_content(db) == live

    done = run_cli("restore", "--backup", str(info.path), "--env", "production", cwd=tmp_path)
    assert done.returncode == 4 and "Traceback" not in done.stderr


def test_force_restores_a_checksum_mismatch_with_a_warning(tmp_path: Path) -> None:
    env = sqlite_env(tmp_path / "var" / "production")
    db = make_sqlite_db(env_db(env), rows=200)
    at_backup = sqlite_content(db)
    info = create_backup(env, tmp_path / "backups")
    _diverge(db)
    Path(f"{info.path}.sha256").write_text("0" * 64 + f"  backups/{info.path.name}\n")

    with pytest.raises(IntegrityError):
        restore_backup(info.path, env)
    result = restore_backup(info.path, env, force=True)

    assert result.forced and "SHA-256 mismatch" in result.warnings[0]
    assert sqlite_content(db) == at_backup


def test_restore_refuses_another_environments_backup_unless_forced(tmp_path: Path) -> None:
    staging = sqlite_env(tmp_path / "var" / "staging", "staging")
    make_sqlite_db(env_db(staging), rows=30)
    info = create_backup(staging, tmp_path / "backups")
    production = sqlite_env(tmp_path / "var" / "production")
    with pytest.raises(ConfigError, match="backup of 'staging'"):
        restore_backup(info.path, production)
    assert not env_db(production).exists()
    result = restore_backup(info.path, production, force=True)
    assert result.forced and sqlite_content(env_db(production)) == sqlite_content(env_db(staging))


@pytest.mark.slow
@pytest.mark.parametrize("point", ["restore-50", "restore-before-swap"])
def test_restore_killed_midway_leaves_the_live_database_as_it_was(
    tmp_path: Path, point: str
) -> None:
    write_environments(tmp_path, {"production": None})
    env = load_environment("production", tmp_path)
    db = make_sqlite_db(env_db(env), rows=3000)
    at_backup = sqlite_content(db)
    backup = create_backup(env, tmp_path / "backups").path
    _diverge(db)
    live = sqlite_content(db)

    PausedRun(
        "restore", "--backup", str(backup), "--env", "production", cwd=tmp_path, point=point
    ).kill()

    assert sqlite_content(db) == live
    assert list(db.parent.glob(f".{db.name}.restore-*.tmp"))  # the half-done work is there...
    result = restore_backup(backup, env)
    assert not list(db.parent.glob(".*.tmp*"))  # ...and the next restore removed it
    assert sqlite_content(db) == at_backup
    assert result.snapshot_path is not None and sqlite_content(result.snapshot_path) == live


@pytest.mark.slow
def test_restore_killed_right_after_the_swap_has_restored_and_kept_the_snapshot(
    tmp_path: Path,
) -> None:
    write_environments(tmp_path, {"production": None})
    env = load_environment("production", tmp_path)
    db = make_sqlite_db(env_db(env), rows=500)
    at_backup = sqlite_content(db)
    backup = create_backup(env, tmp_path / "backups").path
    _diverge(db)
    live = sqlite_content(db)

    PausedRun(
        "restore",
        "--backup",
        str(backup),
        "--env",
        "production",
        cwd=tmp_path,
        point="restore-after-swap",
    ).kill()

    assert sqlite_content(db) == at_backup
    [snapshot] = db.parent.glob(f"{db.name}.prerestore-*")
    assert sqlite_content(snapshot) == live


def test_cli_restore_prints_the_snapshot_and_row_counts(tmp_path: Path) -> None:
    write_environments(tmp_path, {"production": None})
    db = make_sqlite_db(tmp_path / "var/production/shared/data/dhash.sqlite3", rows=100)
    created = run_cli("backup", "create", "--env", "production", "--json", cwd=tmp_path)
    backup = json.loads(created.stdout)["path"]
    expected = sqlite_content(db)
    _diverge(db)
    done = run_cli("restore", "--backup", backup, "--env", "production", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(101 rows)" in done.stdout and "pre-restore snapshot:" in done.stdout
    assert sqlite_content(db) == expected
    missing = run_cli(
        "restore", "--backup", "backups/nope.zip", "--env", "production", cwd=tmp_path
    )
    assert missing.returncode == 1 and "no such backup file" in missing.stderr


def test_restore_names_where_it_keeps_the_live_database_before_swapping_it_out(
    tmp_path: Path,
) -> None:
    """A caller killed between the swap and the result still knows where the database that
    served is (a rollback journals it: issue 12): told before the swap, the snapshot complete."""
    env = sqlite_env(tmp_path / "var" / "production")
    db = make_sqlite_db(env_db(env), rows=300)
    info = create_backup(env, tmp_path / "backups")
    _diverge(db)
    serving = sqlite_content(db)
    told: list[tuple[str, object, object]] = []

    def on_snapshot(where: str) -> None:  # the live file is still the serving one here
        told.append((where, sqlite_content(Path(where)), sqlite_content(db)))

    result = restore_backup(info.path, env, on_snapshot=on_snapshot)

    assert told == [(str(result.snapshot_path), serving, serving)]
    assert sqlite_content(db) != serving
