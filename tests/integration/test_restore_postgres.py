"""PostgreSQL: ``pg_dump -Fc`` backups, restore-test into a scratch database, restore into a new
database swapped in by rename (the old one kept as the snapshot), and kill -9 safety."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from dhash_rollout.backup import create_backup, list_backups, restore_backup, verify_backup
from dhash_rollout.environments import Environment, load_environment
from dhash_service.errors import DhashError, Unavailable
from tests.integration.backup_support import PausedRun, write_environments
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgres


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def fill(url: str, rows: int = 5000, revision: str = "0002_review_and_audit") -> None:
    with psycopg.connect(dsn(url)) as conn:
        conn.execute(
            """
            CREATE TABLE images (
                id bigserial PRIMARY KEY, hash bigint NOT NULL, locator text NOT NULL,
                created_at timestamptz NOT NULL, meta jsonb, thumb bytea, score double precision,
                flagged boolean, note text
            )"""
        )
        conn.execute("CREATE INDEX ix_images_hash ON images (hash)")
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES (%s)", (revision,))
        conn.execute(
            """
            INSERT INTO images (hash, locator, created_at, meta, thumb, score, flagged, note)
            SELECT (g * 2654435761) %% 9223372036854775807, 'lib/' || g || '/p.jpg',
                   timestamptz '2024-01-01 00:00:00+00' + g * interval '1 minute',
                   jsonb_build_object('w', g %% 640, 'tags', jsonb_build_array('a', g %% 7)),
                   decode(lpad(to_hex(g), 8, '0'), 'hex'), g / 3.0, g %% 2 = 0,
                   CASE WHEN g %% 5 = 0 THEN NULL ELSE 'café ✓ ' || g END
            FROM generate_series(1, %s) AS g
            """,
            (rows,),
        )


def content(url: str) -> dict[str, list[tuple[object, ...]]]:
    with psycopg.connect(dsn(url)) as conn:
        return {
            "images": conn.execute("SELECT * FROM images ORDER BY id").fetchall(),
            "alembic_version": conn.execute("SELECT * FROM alembic_version").fetchall(),
        }


def diverge(url: str) -> None:
    with psycopg.connect(dsn(url)) as conn:
        conn.execute("DELETE FROM images WHERE id % 4 = 0")
        conn.execute("UPDATE images SET note = 'changed' WHERE id % 7 = 0")


def pg_env(root: Path, url: str) -> Environment:
    return Environment(
        name="production", root=root, port=1, url="http://127.0.0.1:1", database_url=url
    )


@pytest.fixture
def databases(postgres_server: PostgresServer) -> Iterator[list[str]]:
    """Database names the test makes besides its own; all dropped afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        postgres_server.drop_database(name)


def databases_like(server: PostgresServer, prefix: str) -> list[str]:
    with psycopg.connect(server.dsn(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (prefix + "%",)
        )
        return sorted(str(r[0]) for r in rows)


def test_postgres_backup_restore_test_and_restore_round_trip(
    tmp_path: Path, postgres_url: str, postgres_server: PostgresServer, databases: list[str]
) -> None:
    fill(postgres_url)
    at_backup = content(postgres_url)
    env = pg_env(tmp_path / "var" / "production", postgres_url)

    info = create_backup(env, tmp_path / "backups")

    assert info.schema_revision == "0002_review_and_audit" and info.state == "verified"
    check = subprocess.run(
        ["sha256sum", "-c", f"backups/{info.path.name}.sha256"], cwd=tmp_path, check=False
    )
    assert check.returncode == 0
    verify_backup(info.path, restore_test=True, scratch_database_url=postgres_url)
    assert databases_like(postgres_server, "dhash_restore_test_") == []

    diverge(postgres_url)
    diverged = content(postgres_url)
    live_name = make_url(postgres_url).database
    assert live_name is not None
    holder = psycopg.connect(dsn(postgres_url))  # a client still connected to the live database
    try:
        result = restore_backup(info.path, env, compare_content=True)
    finally:
        holder.close()
    assert result.snapshot is not None
    snapshot_db = make_url(result.snapshot).database
    assert snapshot_db is not None
    databases.append(snapshot_db)

    assert content(postgres_url) == at_backup
    assert (
        content(make_url(postgres_url).set(database=snapshot_db).render_as_string(False))
        == diverged
    )
    assert result.tables == {"public.images": 5000, "public.alembic_version": 1}
    assert databases_like(postgres_server, f"{live_name}_rst_") == []


@pytest.mark.slow
def test_postgres_restore_killed_before_swap_leaves_live_database_as_it_was(
    tmp_path: Path, postgres_url: str, postgres_server: PostgresServer, databases: list[str]
) -> None:
    fill(postgres_url, rows=2000)
    at_backup = content(postgres_url)
    write_environments(tmp_path, {"production": postgres_url})
    env = load_environment("production", tmp_path)
    backup = create_backup(env, tmp_path / "backups").path
    diverge(postgres_url)
    live = content(postgres_url)
    live_name = make_url(postgres_url).database

    paused = PausedRun(
        "restore",
        "--backup",
        str(backup),
        "--env",
        "production",
        cwd=tmp_path,
        point="restore-before-swap",
    )
    paused.kill()

    assert content(postgres_url) == live
    assert len(databases_like(postgres_server, f"{live_name}_rst_")) == 1  # the half-done load
    result = restore_backup(backup, env)
    assert result.snapshot is not None
    databases.append(str(make_url(result.snapshot).database))
    assert databases_like(postgres_server, f"{live_name}_rst_") == []
    assert content(postgres_url) == at_backup


@pytest.mark.slow
def test_postgres_backup_killed_between_zip_and_checksum_then_next_run_succeeds(
    tmp_path: Path, postgres_url: str
) -> None:
    fill(postgres_url, rows=500)
    write_environments(tmp_path, {"production": postgres_url})
    PausedRun(
        "backup", "create", "--env", "production", cwd=tmp_path, point="after-zip-rename"
    ).kill()
    backups = tmp_path / "backups"
    assert list_backups(backups) == [] and any(p.suffix == ".zip" for p in backups.iterdir())

    info = create_backup(load_environment("production", tmp_path), backups)
    assert [p.name for p in backups.iterdir() if p.suffix == ".zip"] == [info.path.name]
    verify_backup(info.path, restore_test=True, scratch_database_url=postgres_url)


def test_postgres_backup_of_a_missing_database_fails_cleanly(
    tmp_path: Path, postgres_url: str
) -> None:
    missing = make_url(postgres_url).set(database="no_such_database").render_as_string(False)
    with pytest.raises(Unavailable, match="no_such_database"):
        create_backup(pg_env(tmp_path, missing), tmp_path / "backups")
    assert [p.name for p in (tmp_path / "backups").iterdir()] == [".locks"]


def test_postgres_restore_refuses_a_sqlite_backup(tmp_path: Path, postgres_url: str) -> None:
    from tests.integration.backup_support import env_db, make_sqlite_db, sqlite_env

    lite = sqlite_env(tmp_path / "lite")
    make_sqlite_db(env_db(lite), rows=5)
    info = create_backup(lite, tmp_path / "backups")
    with pytest.raises(DhashError, match="holds a sqlite database"):
        restore_backup(info.path, pg_env(tmp_path, postgres_url))


def test_cli_verify_restore_test_uses_the_environment_server(
    tmp_path: Path, postgres_url: str
) -> None:
    fill(postgres_url, rows=300)
    write_environments(tmp_path, {"production": postgres_url})
    info = create_backup(load_environment("production", tmp_path), tmp_path / "backups")
    from tests.integration.backup_support import run_cli

    done = run_cli("backup", "verify", str(info.path), "--restore-test", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["restore_tested"] is True
