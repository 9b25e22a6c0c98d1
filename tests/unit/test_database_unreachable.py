"""An unreachable database is named (URL without password) with its cause, and is not taken
for a damaged one (which would mean a data restore) (issue 12 item 9)."""

from __future__ import annotations

import socket

import pytest

from dhash_rollout.runs.schema import database_readable, database_revision
from dhash_service.errors import Unavailable


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again: nothing listens there


@pytest.mark.parametrize("probe", [database_readable, database_revision])
def test_an_unreachable_database_is_named_with_its_cause_not_damaged(probe: object) -> None:
    url = f"postgresql+psycopg://dhash:s3cret-pass@127.0.0.1:{_closed_port()}/dhash"
    with pytest.raises(Unavailable) as raised:
        probe(url)  # type: ignore[operator]
    message = raised.value.message
    assert "s3cret-pass" not in message
    assert "dhash:***@127.0.0.1" in message and "is unreachable" in message
    assert "OperationalError" in message or "refused" in message
