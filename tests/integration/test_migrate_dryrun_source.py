"""``dhash migrate --dry-run --source``: the migrations rehearsed for real on a throw-away copy of
a backup (restore across a migration) or of a database, on SQLite and PostgreSQL; the backup,
the source and the live database are only read, and a bad source is one clear line with the
documented exit code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from dhash_rollout import migrate
from dhash_rollout.backup import create_backup
from dhash_rollout.backup.scratch import SCRATCH_PREFIX, scratch_copy
from dhash_rollout.environments import Environment
from dhash_service.errors import ConfigError, IntegrityError
from dhash_service.store.schema import create_engine_for
from tests.integration.backup_support import cli_env, run_cli, write_environments
from tests.integration.test_migrate_dryrun import failing_scripts, fingerprint  # noqa: F401

IMAGES = 7


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def live_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        (tmp_path / "var" / "production").mkdir(parents=True)
        return f"sqlite:///{tmp_path / 'var' / 'production' / 'dhash.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


def revisions(url: str) -> list[str]:
    return [r.revision for r in migrate.migration_status(url).pending]


def at_first_revision_with_images(url: str) -> list[str]:
    """The database at the first revision, holding ``IMAGES`` images; all revisions."""
    revs = revisions(url)
    migrate.upgrade(url, revs[0])
    engine = create_engine_for(url)
    try:
        with engine.begin() as conn:
            for n in range(IMAGES):
                content = conn.execute(
                    sa.text(
                        "INSERT INTO contents (sha256, input_kind, size_bytes, failures, "
                        "created_at) VALUES (:sha, 'jpeg', 10, '[]', CURRENT_TIMESTAMP) "
                        "RETURNING id"
                    ),
                    {"sha": f"{n:064x}"},
                ).scalar_one()
                conn.execute(
                    sa.text(
                        "INSERT INTO images (content_id, locator, kind, width, height, decision, "
                        "confidence, created_at) VALUES (:c, :loc, 'image', 8, 8, 'new', 1.0, "
                        "CURRENT_TIMESTAMP)"
                    ),
                    {"c": content, "loc": f"lib/{n}.jpg"},
                )
    finally:
        engine.dispose()
    return revs


def file_digests(directory: Path) -> dict[str, str]:
    """The archives and their .sha256 files (verification records are metadata beside them)."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.iterdir()
        if p.is_file()
    }


def scratch_databases(url: str) -> list[str]:
    dsn = sa.engine.make_url(url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(dsn.render_as_string(hide_password=False)) as conn:
        rows = conn.execute("SELECT datname FROM pg_database").fetchall()
    return [str(r[0]) for r in rows if str(r[0]).startswith(SCRATCH_PREFIX)]


def test_a_backup_from_before_a_migration_is_migrated_on_a_copy_and_nothing_else_changes(
    live_url: str, tmp_path: Path
) -> None:
    """Restore across a migration, rehearsed: the backup holds the data at the first revision,
    the live store has moved on to head; the rehearsal migrates a copy of the backup."""
    revs = at_first_revision_with_images(live_url)
    env = Environment("production", tmp_path / "var" / "production", 18080, "", live_url)
    backup = create_backup(env, tmp_path / "backups").path
    migrate.upgrade(live_url)  # the live store is at head now
    live_before, backups_before = fingerprint(live_url), file_digests(tmp_path / "backups")
    write_environments(tmp_path, {"production": live_url})

    done = run_cli(
        "migrate", "--dry-run", "--env", "production", "--source", str(backup), "--json",
        cwd=tmp_path, env=cli_env(),
    )  # fmt: skip

    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["unchanged"] and report["error"] is None
    assert report["start"] == revs[0]
    assert [r["revision"] for r in report["pending"]] == revs[1:]
    assert str(backup) in report["source"] and "revision " + revs[0] in report["source"]
    assert report["rows_before"]["images"] == report["rows_after"]["images"] == IMAGES
    assert "review_items" in report["rows_after"] and "review_items" not in report["rows_before"]
    assert any(s.upper().startswith("CREATE TABLE") for s in report["statements"])
    assert fingerprint(live_url) == live_before  # the live store: untouched
    assert file_digests(tmp_path / "backups") == backups_before  # the backup: untouched
    log = (tmp_path / "migrate-dryrun-source.log").read_text()
    assert f"source: backup {backup}" in log and "source unchanged: yes" in log
    assert "result: OK" in log and f"- images: {IMAGES} -> {IMAGES}" in log
    assert not (tmp_path / "migrate-dryrun.log").exists()  # the live dry-run's evidence stays
    if live_url.startswith("postgresql"):
        assert scratch_databases(live_url) == []  # the copy was dropped


def test_a_database_source_is_copied_and_stays_at_its_own_revision(
    live_url: str, tmp_path: Path
) -> None:
    revs = at_first_revision_with_images(live_url)
    before = fingerprint(live_url)
    source = live_url.removeprefix("sqlite:///") if live_url.startswith("sqlite") else live_url

    with scratch_copy(source) as copy:
        assert copy.revision == revs[0] and copy.rows["images"] == IMAGES
        report = migrate.rehearse(
            copy.url, source=copy.label, source_revision=copy.source_revision, notes=copy.notes
        )

    assert report.ok and report.unchanged, report.error
    assert report.start == revs[0] and [r.revision for r in report.pending] == revs[1:]
    assert report.rows_after["images"] == IMAGES
    assert fingerprint(live_url) == before  # at the first revision still, same rows
    if live_url.startswith("postgresql"):
        assert scratch_databases(live_url) == []


def test_a_migration_failing_on_the_copy_is_reported_and_the_source_left_alone(
    tmp_path: Path,
    failing_scripts: Any,  # noqa: F811
) -> None:
    url = f"sqlite:///{tmp_path / 'source.sqlite3'}"
    migrate.upgrade(url, "a1", config_factory=failing_scripts)
    before = fingerprint(url)
    with scratch_copy(str(tmp_path / "source.sqlite3")) as copy:
        report = migrate.rehearse(
            copy.url,
            tmp_path / "rehearsal.log",
            source=copy.label,
            source_revision=copy.source_revision,
            config_factory=failing_scripts,
        )
    assert not report.ok and "no_such_table" in (report.error or "")
    assert "the schema is unchanged at a1 on the copy" in (report.error or "")
    assert report.unchanged and fingerprint(url) == before
    assert "result: FAILED" in (tmp_path / "rehearsal.log").read_text()


@pytest.fixture
def sqlite_backup(tmp_path: Path) -> Path:
    url = f"sqlite:///{tmp_path / 'var' / 'production' / 'dhash.sqlite3'}"
    (tmp_path / "var" / "production").mkdir(parents=True)
    at_first_revision_with_images(url)
    env = Environment("production", tmp_path / "var" / "production", 18080, "", url)
    return create_backup(env, tmp_path / "backups").path


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "code", "says"),
    [
        ("checksum", 4, "SHA-256 mismatch"),
        ("without-dry-run", 2, "it needs --dry-run"),
    ],
)
def test_a_bad_source_is_one_line_with_its_exit_code_and_changes_nothing(
    sqlite_backup: Path, tmp_path: Path, damage: str, code: int, says: str
) -> None:
    """Through the CLI (a missing file, exit 1, and a file that is no source, exit 2, are
    unit-tested in tests/unit/test_scratch_source.py)."""
    source, flags = sqlite_backup, ["--dry-run"]
    if damage == "checksum":
        _flip(sqlite_backup, sqlite_backup.stat().st_size // 2)
    else:
        flags = []
    live = tmp_path / "var" / "production" / "dhash.sqlite3"
    live_before = hashlib.sha256(live.read_bytes()).hexdigest()
    write_environments(tmp_path, {"production": f"sqlite:///{live}"})

    done = run_cli("migrate", *flags, "--env", "production", "--source", str(source), cwd=tmp_path)

    assert done.returncode == code, done.stdout + done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert hashlib.sha256(live.read_bytes()).hexdigest() == live_before
    assert not (tmp_path / "migrate-dryrun-source.log").exists()


def test_a_corrupt_sqlite_source_or_a_backup_without_its_checksum_is_an_integrity_error(
    sqlite_backup: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.sqlite3"
    live = tmp_path / "var" / "production" / "dhash.sqlite3"
    data = bytearray(live.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the header survives, the schema page does not
    corrupt.write_bytes(bytes(data))
    with (
        pytest.raises(IntegrityError, match=r"corrupt\.sqlite3") as err,
        scratch_copy(str(corrupt)),
    ):
        pass
    assert err.value.exit_code == 4

    sqlite_backup.with_name(sqlite_backup.name + ".sha256").unlink()
    with pytest.raises(IntegrityError) as err, scratch_copy(str(sqlite_backup)):
        pass
    assert err.value.exit_code == 4 and sqlite_backup.name in err.value.message


@pytest.mark.postgres
def test_a_postgresql_backup_needs_a_postgresql_server_for_its_copy(
    postgres_url: str, tmp_path: Path
) -> None:
    at_first_revision_with_images(postgres_url)
    env = Environment("production", tmp_path / "root", 18080, "", postgres_url)
    backup = create_backup(env, tmp_path / "backups").path
    with (
        pytest.raises(ConfigError, match="needs a PostgreSQL server"),
        scratch_copy(str(backup), server_url=f"sqlite:///{tmp_path / 'x.sqlite3'}"),
    ):
        pass
