"""Engines and schema versions: the one place that knows how to connect and how to migrate.

Migrations live next to this file (``migrations/``) and are configured in code, so no
``alembic.ini`` is needed and the installed package can migrate its own database. The rollout
toolkit builds ``dhash migrate`` on these functions; a dry-run passes its own connection in
``config.attributes["connection"]`` inside a transaction it rolls back.
"""

from __future__ import annotations

import time
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

# A pooled PostgreSQL connection idle at least this long is pinged before it is handed out.
PING_AFTER_IDLE_SECONDS = 1.0
_CHECKED_IN_AT = "dhash_checked_in_at"

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
    PostgreSQL: psycopg 3; a pooled connection idle for :data:`PING_AFTER_IDLE_SECONDS` is pinged
    before it is handed out (``_ping_when_idle``), so a restarted server costs a reconnect, not
    errors.
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
    engine = sa.create_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: sa.Engine, idle_seconds: float = PING_AFTER_IDLE_SECONDS) -> None:
    """SQLAlchemy's pessimistic disconnect check (the documented ``checkout`` recipe that
    ``pool_pre_ping`` also follows), only for a connection that sat in the pool a while.

    ``pool_pre_ping`` pays a ``SELECT 1`` round trip at every checkout: two per ingest, ~0.4 ms
    of the worker's CPU (bench/RESULTS.md). A connection checked in moments ago was working
    moments ago; one idle past the threshold (the only kind a restarted server leaves behind,
    unless it restarts within that second) is pinged, and a dead one is replaced: raising
    ``DisconnectionError`` makes the pool discard it and try another. A connection that died in
    the last second fails its statement instead, which invalidates the pool's other
    connections too (SQLAlchemy's disconnect handling), so only that request fails.
    """

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _mark(_dbapi_connection: Any, record: Any) -> None:
        record.info[_CHECKED_IN_AT] = time.monotonic()  # a new connection counts as just used

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        checked_in = record.info.get(_CHECKED_IN_AT)
        if checked_in is not None and time.monotonic() - checked_in < idle_seconds:
            return  # in use (or made) a moment ago
        try:
            _ping(dbapi_connection)
        except Exception as exc:  # the driver's error for a dead connection
            raise sa.exc.DisconnectionError(str(exc)) from exc


def _ping(dbapi_connection: Any) -> None:
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    if not dbapi_connection.autocommit:
        dbapi_connection.rollback()  # end the transaction the ping opened


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
