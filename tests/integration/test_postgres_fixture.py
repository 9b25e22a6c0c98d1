import psycopg
import pytest

from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.postgres


def test_postgres_server_answers_on_loopback(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.dsn()) as conn:
        row = conn.execute("select inet_server_addr()::text, current_setting('port')").fetchone()
    assert row is not None
    assert row[0].startswith("127.0.0.1")
    assert int(row[1]) == postgres_server.port


def test_each_test_gets_an_empty_database(postgres_url: str) -> None:
    dsn_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn_url) as conn:
        tables = conn.execute(
            "select count(*) from information_schema.tables where table_schema='public'"
        ).fetchone()
    assert tables == (0,)
