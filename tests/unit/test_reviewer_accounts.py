"""Reviewer accounts from DHASH_REVIEWER_TOKENS: names and tokens that belong together."""

from __future__ import annotations

import pytest

from dhash_service.api.reviewers import ReviewerAccounts, same_secret, session_hash
from dhash_service.config import Settings
from dhash_service.errors import ConfigError

ACCOUNTS = ReviewerAccounts(["alice:alice-token-1", "Bob Smith:bob-token-22"])


@pytest.mark.parametrize(
    ("name", "token", "who"),
    [
        ("alice", "alice-token-1", "alice"),
        (" alice ", "alice-token-1", "alice"),
        ("Bob Smith", "bob-token-22", "Bob Smith"),
        ("alice", "bob-token-22", None),  # another reviewer's token
        ("bob smith", "bob-token-22", None),  # names are exact
        ("alice", "alice-token-1x", None),
        ("", "", None),
    ],
)
def test_a_name_and_token_log_in_only_together(name: str, token: str, who: str | None) -> None:
    assert ACCOUNTS.authenticate(name, token) == who


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("alice", "name:token"),
        ("<script>:long-enough-token", "name:token"),
        ("alice:short", "8..256"),
        (":no-name-token", "name:token"),
    ],
)
def test_a_malformed_entry_stops_the_service(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReviewerAccounts([entry])


def test_a_name_listed_twice_is_refused() -> None:
    with pytest.raises(ConfigError, match="twice"):
        ReviewerAccounts(["alice:token-aaaaaa", "alice:token-bbbbbb"])


def test_no_accounts_means_nobody_logs_in() -> None:
    empty = ReviewerAccounts([])
    assert not empty.configured and empty.authenticate("alice", "alice-token-1") is None


def test_reviewer_tokens_come_from_the_environment_and_are_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DHASH_REVIEWER_TOKENS", "alice:alice-token-1, bob:bob-token-22")
    settings = Settings()
    assert settings.reviewer_tokens == ["alice:alice-token-1", "bob:bob-token-22"]
    assert {"alice-token-1", "bob-token-22"} <= set(settings.all_api_tokens)


def test_secrets_compare_whole_and_sessions_are_stored_hashed() -> None:
    assert same_secret("abc", "abc") and not same_secret("abd", "abc")
    assert not same_secret(None, "abc") and not same_secret("", "")
    assert session_hash("cookie") != "cookie" and len(session_hash("cookie")) == 64
