"""Alembic environment: online migrations only, on our engine or on a connection passed in.

``config.attributes["connection"]``: run on that connection and leave its transaction to the
caller (a dry-run rolls it back). Otherwise connect to ``config.attributes["database_url"]``
and commit. SQLite uses batch mode, since it cannot ALTER most things in place, with foreign
keys off while it runs (a batch table rebuild would otherwise cascade-delete child rows) and
checked after.

Two processes migrating at once (workers starting with auto-migrate) queue instead of racing:
SQLite takes the write lock before reading the version, PostgreSQL takes an advisory lock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from dhash_service.store.models import Base
from dhash_service.store.schema import MIGRATION_LOCK_KEY, create_engine_for

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATION_LOCK_KEY)))
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine_for(config.attributes["database_url"])
    try:
        with engine.connect() as fresh:
            sqlite = fresh.dialect.name == "sqlite"
            if sqlite:
                # Batch mode rebuilds a table (copy, DROP, rename): with foreign keys on, the DROP
                # cascades and deletes every child row. SQLite ignores this pragma inside a
                # transaction, so it is set on the raw connection before ours begins.
                raw = fresh.connection.driver_connection
                assert raw is not None
                raw.execute("PRAGMA foreign_keys = OFF")
            fresh.execution_options(sqlite_begin="IMMEDIATE")
            _run(fresh)
            if sqlite:
                broken = fresh.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    fresh.rollback()
                    raise RuntimeError(f"migration left broken foreign keys: {broken[:5]}")
            fresh.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("dhash migrations run online only; use `dhash migrate --dry-run`")
run_migrations_online()
