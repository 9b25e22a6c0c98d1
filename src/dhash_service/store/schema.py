"""Engines and schema versions: the one place that knows how to connect and how to migrate.

Migrations live next to this file (``migrations/``) and are configured in code, so no
``alembic.ini`` is needed and the installed package can migrate its own database. The rollout
toolkit builds ``dhash migrate`` on these functions; a dry-run passes its own connection in
``config.attributes["connection"]`` inside a transaction it rolls back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# PostgreSQL advisory lock keys ("dhas" + a digit): migrations, and library-membership writers.
MIGRATION_LOCK_KEY = 0x64686173_01
LIBRARY_LOCK_KEY = 0x64686173_02

# How long a SQLite writer waits for another process's write lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def is_sqlite(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "sqlite"


def create_engine_for(database_url: str, **kwargs: Any) -> sa.Engine:
    """An engine with our per-backend settings.

    SQLite: WAL (readers never block the writer), ``synchronous=FULL`` (a committed transaction
    survives power loss, not only a process crash), foreign keys on, a busy timeout so concurrent
    worker processes queue instead of failing, and real transactions for DDL too (SQLAlchemy's
    documented recipe: the driver's own transaction handling off, ``BEGIN`` emitted by us; a
    connection with execution option ``sqlite_begin="IMMEDIATE"`` takes the write lock up front).
    PostgreSQL: psycopg 3 with ``pool_pre_ping`` so a restarted server costs one retry, not errors.
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("psycopg2", ""):
        url = url.set(drivername="postgresql+psycopg")
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves, see below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "")
        connection.exec_driver_sql(f"BEGIN {mode}".strip())


def alembic_config(database_url: str) -> Config:
    """An Alembic config for our migrations against ``database_url`` (no ini file)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # Kept out of the ini-style options, where '%' in a password would be interpolated.
    config.attributes["database_url"] = database_url
    return config


def head_revision() -> str:
    """The newest revision shipped with this package (there is exactly one head)."""
    heads = ScriptDirectory(str(MIGRATIONS_DIR)).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have exactly one head, found {heads}")
    return str(heads[0])


def engine_revision(engine: sa.Engine) -> str | None:
    """The revision the database behind an open engine is at (None: never migrated)."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None for a database never migrated."""
    engine = create_engine_for(database_url)
    try:
        return engine_revision(engine)
    finally:
        engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)
