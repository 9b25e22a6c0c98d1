"""Creating backups of a SQLite environment: content, checksum format, lock, retention."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dhash_rollout.backup import (
    create_backup,
    latest_verified_backup,
    list_backups,
    prune_backups,
    verify_backup,
)
from dhash_rollout.backup.naming import lock_path
from dhash_rollout.runs.locking import hold_lock
from dhash_service.errors import IntegrityError, Locked
from tests.integration.backup_support import (
    PausedRun,
    assert_restores,
    env_db,
    make_sqlite_db,
    run_cli,
    sqlite_content,
    sqlite_env,
    write_environments,
)


@pytest.fixture
def env_and_dir(tmp_path: Path) -> tuple[object, Path]:
    env = sqlite_env(tmp_path / "var" / "production")
    make_sqlite_db(env_db(env))
    return env, tmp_path / "backups"


def test_backup_holds_manifest_database_gates_and_release(tmp_path: Path) -> None:
    env = sqlite_env(tmp_path / "var" / "production")
    make_sqlite_db(env_db(env))
    gates = tmp_path / "quality-gates-config.json"
    gates.write_text('{"production": {"healthFailures": {"threshold": 2}}}', encoding="utf-8")
    release = env.root / "current" / "release.json"
    release.parent.mkdir(parents=True)
    release.write_text('{"version": "1.2.3", "wheel_sha256": "ab"}', encoding="utf-8")

    info = create_backup(env, tmp_path / "backups", gates_config=gates)

    assert info.path.name.startswith("dhash_production_") and info.path.suffix == ".zip"
    assert info.state == "verified" and info.schema_revision == "r1"
    with zipfile.ZipFile(info.path) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        assert zf.read("config/quality-gates-config.json") == gates.read_bytes()
        assert zf.read("release/release.json") == release.read_bytes()
    assert names == {
        "manifest.json",
        "database/dhash.sqlite3",
        "config/quality-gates-config.json",
        "release/release.json",
    }
    assert manifest["env"] == "production"
    assert manifest["schema_revision"] == "r1"
    assert manifest["release"]["version"] == "1.2.3"
    assert manifest["database"]["tables"]["images"]["rows"] == 2000
    assert set(manifest["members"]) == names - {"manifest.json"}
    assert {"service_version", "created_at", "host"} <= manifest.keys()
    assert_restores(info.path, sqlite_content(env_db(env)), tmp_path / "scratch", "production")


def test_guide_checksum_commands_pass_verbatim_from_the_checkout_root(tmp_path: Path) -> None:
    write_environments(tmp_path, {"production": None})
    make_sqlite_db(tmp_path / "var/production/shared/data/dhash.sqlite3")
    created = run_cli(
        "backup", "create", "--env", "production", "--retention-days", "14", cwd=tmp_path
    )
    assert created.returncode == 0, created.stderr

    guide = (
        "LATEST_BACKUP=$(ls -1 backups/dhash_*.zip | sort -r | head -n1)\n"
        'sha256sum -c "${LATEST_BACKUP}.sha256"\n'
    )
    done = subprocess.run(
        ["bash", "-euc", guide], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(": OK")
    if shutil.which("shasum"):
        mac = subprocess.run(
            ["bash", "-euc", guide.replace("sha256sum -c", "shasum -a 256 -c")],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=False,
        )
        assert mac.returncode == 0, mac.stderr
    [backup] = list_backups(tmp_path / "backups")
    assert_restores(
        backup.path,
        sqlite_content(tmp_path / "var/production/shared/data/dhash.sqlite3"),
        tmp_path / "scratch",
        "production",
    )


def test_uncheckpointed_wal_commit_is_in_the_backup(tmp_path: Path) -> None:
    env = sqlite_env(tmp_path / "var" / "production")
    db = make_sqlite_db(env_db(env), rows=100)
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("INSERT INTO images (hash, path) VALUES (42, '/only/in/the/wal.jpg')")
    writer.commit()
    try:
        wal = db.with_name(db.name + "-wal")
        assert wal.stat().st_size > 0
        bare = tmp_path / "bare-copy.sqlite3"
        shutil.copyfile(db, bare)  # what copying the bare file would have kept
        check = sqlite3.connect(bare)
        assert check.execute("SELECT count(*) FROM images").fetchone() == (100,)
        check.close()

        info = create_backup(env, tmp_path / "backups")
        expected = sqlite_content(db)
    finally:
        writer.close()
    assert ("/only/in/the/wal.jpg",) in [(r[2],) for r in expected["images"]]
    assert_restores(info.path, expected, tmp_path / "scratch", "production")


def test_second_backup_of_the_same_env_is_refused_with_exit_3(tmp_path: Path) -> None:
    write_environments(tmp_path, {"production": None})
    db = make_sqlite_db(tmp_path / "var/production/shared/data/dhash.sqlite3", rows=6000)
    paused = PausedRun("backup", "create", "--env", "production", cwd=tmp_path, point="dump-50")
    try:
        holder = json.loads((tmp_path / "backups/.locks/production.lock").read_text())
        assert holder["pid"] == paused.proc.pid and holder["host"] and holder["started_at"]
        second = run_cli("backup", "create", "--env", "production", cwd=tmp_path)
        assert second.returncode == 3
        assert f"pid {paused.proc.pid}" in second.stderr and "Traceback" not in second.stderr
    finally:
        paused.kill()
    # The dead holder's lock is taken over and its leftovers cleaned.
    third = run_cli("backup", "create", "--env", "production", "--json", cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    assert sorted(
        p.name for p in (tmp_path / "backups").iterdir() if not p.name.startswith(".")
    ) == sorted(
        [
            Path(json.loads(third.stdout)["path"]).name,
            Path(json.loads(third.stdout)["path"]).name + ".sha256",
        ]
    )
    assert not [p for p in (tmp_path / "backups").iterdir() if p.name.endswith(".tmp")]
    [backup] = list_backups(tmp_path / "backups")
    assert_restores(backup.path, sqlite_content(db), tmp_path / "scratch", "production")


def test_library_raises_locked_while_another_holds_the_env(
    tmp_path: Path, env_and_dir: tuple[object, Path]
) -> None:
    env, backups = env_and_dir
    with hold_lock(lock_path(backups, "production"), "deploy"), pytest.raises(Locked) as err:
        create_backup(env, backups)  # type: ignore[arg-type]
    assert err.value.exit_code == 3 and "held by pid" in err.value.message
    assert list_backups(backups) == []


def _backup_at(env: object, backups: Path, when: datetime) -> Path:
    return create_backup(env, backups, clock=lambda: when).path  # type: ignore[arg-type]


def test_retention_deletes_old_backups_but_keeps_the_newest_verified(
    tmp_path: Path, env_and_dir: tuple[object, Path]
) -> None:
    env, backups = env_and_dir
    now = datetime.now(UTC).replace(microsecond=0)
    old = [_backup_at(env, backups, now - timedelta(days=d)) for d in (40, 35, 20)]
    assert len(list_backups(backups)) == 3

    dry = prune_backups(backups, older_than=timedelta(days=30), dry_run=True, now=now)
    assert sorted(dry.deleted) == sorted(old[:2]) and len(list_backups(backups)) == 3

    report = prune_backups(backups, older_than=timedelta(days=30), now=now)
    assert sorted(report.deleted) == sorted(old[:2])
    assert [b.path for b in list_backups(backups)] == [old[2]]
    assert not any(p.exists() for p in [*old[:2], *(Path(f"{p}.sha256") for p in old[:2])])

    # Everything is older than the limit: the newest verified one still stays.
    report = prune_backups(backups, older_than=timedelta(days=1), now=now)
    assert report.deleted == [] and report.kept == [old[2]]
    assert_restores(old[2], sqlite_content(env_db(env)), tmp_path / "scratch", "production")  # type: ignore[arg-type]


def test_retention_skips_a_corrupt_newest_backup_when_choosing_what_to_keep(
    tmp_path: Path, env_and_dir: tuple[object, Path]
) -> None:
    env, backups = env_and_dir
    now = datetime.now(UTC).replace(microsecond=0)
    good = _backup_at(env, backups, now - timedelta(days=50))
    bad = _backup_at(env, backups, now - timedelta(days=45))
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))

    report = prune_backups(backups, older_than=timedelta(days=30), now=now)

    assert report.kept == [good] and report.deleted == [bad]
    assert latest_verified_backup(backups, "production") is not None
    assert_restores(good, sqlite_content(env_db(env)), tmp_path / "scratch", "production")  # type: ignore[arg-type]


def test_create_with_retention_days_prunes_that_env_only(tmp_path: Path) -> None:
    prod = sqlite_env(tmp_path / "var" / "production")
    stag = sqlite_env(tmp_path / "var" / "staging", "staging")
    make_sqlite_db(env_db(prod), rows=50)
    make_sqlite_db(env_db(stag), rows=50)
    backups = tmp_path / "backups"
    now = datetime.now(UTC).replace(microsecond=0)
    old_prod = _backup_at(prod, backups, now - timedelta(days=20))
    old_stag = _backup_at(stag, backups, now - timedelta(days=20))

    info = create_backup(prod, backups, retention_days=14)

    assert info.pruned == (old_prod,)
    assert {b.path for b in list_backups(backups)} == {info.path, old_stag}
    for path, env in ((info.path, prod), (old_stag, stag)):
        assert_restores(
            path, sqlite_content(env_db(env)), tmp_path / f"scratch-{env.name}", env.name
        )


def test_list_and_latest_verified_are_newest_first_and_skip_incomplete(
    tmp_path: Path, env_and_dir: tuple[object, Path]
) -> None:
    env, backups = env_and_dir
    now = datetime.now(UTC).replace(microsecond=0)
    first = _backup_at(env, backups, now - timedelta(hours=3))
    second = _backup_at(env, backups, now - timedelta(hours=1))
    orphan = backups / f"dhash_production_{now:%Y%m%d_%H%M%S}.zip"
    shutil.copyfile(second, orphan)  # a zip without .sha256 is not a backup

    listed = list_backups(backups, "production")
    assert [b.path for b in listed] == [second, first]
    assert all(b.state == "verified" for b in listed)
    assert latest_verified_backup(backups, "production") == verify_backup(second)
    assert latest_verified_backup(backups, "production", max_age=timedelta(minutes=30)) is None
    assert latest_verified_backup(backups, "staging") is None

    second.write_bytes(second.read_bytes() + b"\0")
    assert [b.state for b in list_backups(backups)] == ["unverified", "verified"]
    latest = latest_verified_backup(backups, "production")
    assert latest is not None and latest.path == first
    assert [b.state for b in list_backups(backups)] == ["failed", "verified"]
    with pytest.raises(IntegrityError):
        verify_backup(second)
    assert_restores(first, sqlite_content(env_db(env)), tmp_path / "scratch", "production")  # type: ignore[arg-type]


def test_cli_list_prune_and_verify_report_json(tmp_path: Path) -> None:
    write_environments(tmp_path, {"production": None})
    db = make_sqlite_db(tmp_path / "var/production/shared/data/dhash.sqlite3", rows=300)
    assert run_cli("backup", "create", "--env", "production", cwd=tmp_path).returncode == 0

    listed = run_cli("backup", "list", "--json", cwd=tmp_path)
    [entry] = json.loads(listed.stdout)
    assert (
        entry["env"] == "production" and entry["state"] == "verified" and entry["age_seconds"] >= 0
    )

    checked = run_cli("backup", "verify", "--last", "3", "--restore-test", "--json", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout.splitlines()[0])["restore_tested"] is True

    pruned = run_cli("backup", "prune", "--older-than", "0d", "--dry-run", "--json", cwd=tmp_path)
    assert json.loads(pruned.stdout)["kept"] == [entry["path"]]
    assert run_cli("backup", "prune", "--older-than", "soon", cwd=tmp_path).returncode == 2
    assert run_cli("backup", "verify", cwd=tmp_path).returncode == 2
    assert_restores(Path(entry["path"]), sqlite_content(db), tmp_path / "scratch", "production")


def test_progress_is_a_rich_bar_on_a_terminal_and_json_lines_otherwise(tmp_path: Path) -> None:
    import os
    import pty

    from tests.integration.backup_support import DHASH, cli_env

    write_environments(tmp_path, {"production": None})
    db = make_sqlite_db(tmp_path / "var/production/shared/data/dhash.sqlite3", rows=300)
    primary, terminal = pty.openpty()
    proc = subprocess.Popen(
        [DHASH, "backup", "create", "--env", "production"],
        cwd=tmp_path,
        env=cli_env(TERM="xterm-256color", COLUMNS="100"),
        stdout=subprocess.DEVNULL,
        stderr=terminal,
    )
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO once the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    assert proc.wait(timeout=60) == 0
    assert b"dump" in shown and "━".encode() in shown and b'"event"' not in shown

    piped = run_cli("backup", "create", "--env", "production", cwd=tmp_path)
    events = [json.loads(line) for line in piped.stderr.splitlines()]
    assert events and all(e["event"] == "progress" for e in events)
    assert {"dump", "verify-checksum", "verify-members"} <= {e["phase"] for e in events}
    for backup in list_backups(tmp_path / "backups"):
        assert_restores(backup.path, sqlite_content(db), tmp_path / backup.path.stem, "production")
