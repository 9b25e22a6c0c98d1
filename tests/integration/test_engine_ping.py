"""The PostgreSQL engine pings a pooled connection only when it sat idle: a busy pool pays no
round trip per checkout, and a connection the server dropped while idle is replaced unseen."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from dhash_service.store import schema

pytestmark = pytest.mark.postgres


def test_a_connection_back_in_the_pool_a_moment_ago_is_not_pinged(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = schema.create_engine_for(postgres_url, pool_size=1)
    pings: list[float] = []
    original = schema._ping
    monkeypatch.setattr(
        schema, "_ping", lambda conn: (pings.append(time.monotonic()), original(conn))
    )
    try:
        for _ in range(5):
            with engine.connect() as connection:
                connection.execute(sa.select(1))
        assert pings == []  # a new connection, then the same one straight back
        time.sleep(schema.PING_AFTER_IDLE_SECONDS + 0.2)
        with engine.connect() as connection:
            connection.execute(sa.select(1))
        assert len(pings) == 1
    finally:
        engine.dispose()


def test_a_connection_the_server_dropped_while_idle_is_replaced_without_an_error(
    postgres_url: str,
) -> None:
    engine = schema.create_engine_for(postgres_url, pool_size=1)
    try:
        with engine.connect() as connection:
            pid = connection.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()
        admin = sa.create_engine(postgres_url, poolclass=sa.NullPool)
        with admin.connect() as other:
            assert other.execute(sa.select(sa.func.pg_terminate_backend(pid))).scalar_one()
        admin.dispose()
        time.sleep(schema.PING_AFTER_IDLE_SECONDS + 0.2)
        with engine.connect() as connection:  # pinged, found dead, replaced
            new_pid = connection.execute(sa.select(sa.func.pg_backend_pid())).scalar_one()
        time.sleep(schema.PING_AFTER_IDLE_SECONDS + 0.2)
        with engine.connect() as connection:  # pinged again: the ping left no transaction open
            autocommit = connection.execution_options(isolation_level="AUTOCOMMIT")
            assert autocommit.execute(sa.select(1)).scalar_one() == 1
        assert new_pid != pid
    finally:
        engine.dispose()
