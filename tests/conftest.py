"""Shared fixtures: a real PostgreSQL server (session) and a fresh database per test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer, running_postgres

pytest_plugins = ["tests.support.matrix_sampling"]  # make test samples marked matrices


@pytest.fixture(autouse=True)
def _root_logger_as_found() -> Iterator[None]:
    """Each test starts from the root logger as the session had it. A CLI command run in-process
    points the root handler at the sys.stderr of that moment (a capture stream closed when the
    test ends) and may leave the level at DEBUG; the next test's library debug line then fails
    inside the closed stream and prints a logging-error traceback into its own output."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """SQLAlchemy URL of a new, empty database on the test server."""
    name = postgres_server.create_database()
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.drop_database(name)
