"""Every migration goes up, down and up again, and head equals the models, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from dhash_service.store import schema
from dhash_service.store.models import Base


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'dhash.sqlite3'}"
    else:
        yield request.getfixturevalue("postgres_url")


def diffs_from_models(database_url: str) -> list[object]:
    engine = schema.create_engine_for(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def tables(database_url: str) -> set[str]:
    engine = schema.create_engine_for(database_url)
    try:
        return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def shape(database_url: str) -> dict[str, object]:
    """The schema (but alembic_version) as the database reports it: columns (type, nullability,
    default), indexes, unique constraints, foreign keys and the primary key of every table."""
    engine = schema.create_engine_for(database_url)
    try:
        inspector = sa.inspect(engine)
        return {
            table: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in inspector.get_columns(table)
                ],
                "indexes": sorted(
                    (str(i["name"]), tuple(map(str, i["column_names"])), bool(i["unique"]))
                    for i in inspector.get_indexes(table)
                ),
                "unique": sorted(
                    tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)
                ),
                "foreign_keys": sorted(
                    (tuple(f["constrained_columns"]), f["referred_table"], str(f.get("options")))
                    for f in inspector.get_foreign_keys(table)
                ),
                "primary_key": inspector.get_pk_constraint(table)["constrained_columns"],
            }
            for table in sorted(set(inspector.get_table_names()) - {"alembic_version"})
        }
    finally:
        engine.dispose()


def revisions_base_to_head() -> list[tuple[str, str]]:
    """(revision, what to downgrade to) from the first migration to the newest."""
    script = ScriptDirectory(str(schema.MIGRATIONS_DIR))
    walked = list(script.walk_revisions("base", "heads"))[::-1]
    return [(r.revision, str(r.down_revision) if r.down_revision else "base") for r in walked]


def test_there_is_exactly_one_head() -> None:
    script = ScriptDirectory(str(schema.MIGRATIONS_DIR))
    assert len(script.get_heads()) == 1
    assert schema.head_revision() == script.get_current_head()
    assert len(revisions_base_to_head()) >= 2


def test_each_revision_goes_up_down_and_up_and_head_equals_the_models(database_url: str) -> None:
    assert schema.current_revision(database_url) is None
    for revision, previous in revisions_base_to_head():
        before_up = shape(database_url)
        schema.upgrade(database_url, revision)
        after_up = shape(database_url)
        assert schema.current_revision(database_url) == revision
        schema.downgrade(database_url, previous)
        assert schema.current_revision(database_url) == (None if previous == "base" else previous)
        assert shape(database_url) == before_up  # down undoes exactly what up did
        schema.upgrade(database_url, revision)
        assert shape(database_url) == after_up
    assert schema.current_revision(database_url) == schema.head_revision()
    assert diffs_from_models(database_url) == []
    assert tables(database_url) == set(Base.metadata.tables)
    schema.downgrade(database_url, "base")
    assert tables(database_url) == set()


def test_an_upgrade_on_a_passed_in_connection_can_be_rolled_back(database_url: str) -> None:
    """The dry-run contract: env.py uses the caller's connection and leaves its transaction."""
    schema.upgrade(database_url, revisions_base_to_head()[0][0])
    before = tables(database_url)
    engine = schema.create_engine_for(database_url)
    try:
        with engine.connect() as connection:
            transaction = connection.begin()
            config = schema.alembic_config(database_url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            assert set(sa.inspect(connection).get_table_names()) >= set(Base.metadata.tables)
            transaction.rollback()
    finally:
        engine.dispose()
    assert tables(database_url) == before
    assert schema.current_revision(database_url) == revisions_base_to_head()[0][0]


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = schema.create_engine_for(f"sqlite:///{tmp_path / 'nested' / 'db.sqlite3'}")
    try:
        with engine.connect() as connection:
            pragma = {
                name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")
            }
    finally:
        engine.dispose()
    assert pragma == {
        "journal_mode": "wal",
        "foreign_keys": 1,
        "busy_timeout": schema.SQLITE_BUSY_TIMEOUT_MS,
        "synchronous": 2,  # FULL
    }
