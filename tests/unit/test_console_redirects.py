"""After login the console only ever sends the browser to one of its own pages."""

from __future__ import annotations

import pytest

from dhash_service.api.console import _safe_next


@pytest.mark.parametrize(
    ("asked", "sent"),
    [
        ("/review/12?source=a", "/review/12?source=a"),
        ("/review", "/review"),
        ("/login", "/login"),
        (None, "/review"),
        ("", "/review"),
        ("//evil.example/review", "/review"),
        ("https://evil.example/review", "/review"),
        ("/review//evil.example", "/review"),
        ("/review\\..\\x", "/review"),
        ("/v1/review", "/review"),
        ("javascript:alert(1)", "/review"),
    ],
)
def test_next_is_a_console_path_or_the_queue(asked: str | None, sent: str) -> None:
    assert _safe_next(asked) == sent
