"""Who may use the review console, and how a browser proves it: accounts, sessions, CSRF.

Accounts come from ``DHASH_REVIEWER_TOKENS`` (``name:token`` pairs): a reviewer logs in with
both, and the name is what every decision records. A login creates a server-side session: the
browser gets a random 256-bit cookie (HttpOnly, SameSite=Strict, Secure over TLS, expiring with
the session) and the store keeps only its sha256, so a copy of the database logs nobody in.
Each session has its own CSRF token, which every form of the console carries and every POST
must return (compared in constant time); the login form, before any session exists, uses a
double-submit cookie for the same purpose. The JSON API is unchanged: bearer tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from dhash_service.errors import ConfigError

SESSION_COOKIE = "dhash_session"
LOGIN_CSRF_COOKIE = "dhash_login_csrf"
MIN_TOKEN_LENGTH = 8
MAX_CREDENTIAL_LENGTH = 256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}")


def new_secret() -> str:
    """A 256-bit random value, URL-safe (cookies, CSRF tokens)."""
    return secrets.token_urlsafe(32)


def session_hash(cookie: str) -> str:
    """What the store keeps of a session cookie."""
    return hashlib.sha256(cookie.encode()).hexdigest()


def same_secret(given: str | None, expected: str) -> bool:
    if not given or len(given) > MAX_CREDENTIAL_LENGTH:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True)
class Reviewer:
    name: str
    token: str


class ReviewerAccounts:
    """The reviewers of ``DHASH_REVIEWER_TOKENS``; a malformed entry stops the service."""

    def __init__(self, entries: Sequence[str]) -> None:
        reviewers: dict[str, Reviewer] = {}
        for entry in entries:
            name, sep, token = entry.partition(":")
            name = name.strip()
            if not sep or not _NAME.fullmatch(name):
                raise ConfigError(
                    "DHASH_REVIEWER_TOKENS: each entry is name:token, the name 1-64 letters, "
                    "digits, spaces or ._@- (starting with a letter or digit)"
                )
            if len(token) < MIN_TOKEN_LENGTH or len(token) > MAX_CREDENTIAL_LENGTH:
                raise ConfigError(
                    f"DHASH_REVIEWER_TOKENS: the token of {name!r} must be "
                    f"{MIN_TOKEN_LENGTH}..{MAX_CREDENTIAL_LENGTH} characters"
                )
            if name in reviewers:
                raise ConfigError(f"DHASH_REVIEWER_TOKENS: {name!r} is listed twice")
            reviewers[name] = Reviewer(name, token)
        self._reviewers = tuple(reviewers.values())

    @property
    def configured(self) -> bool:
        return bool(self._reviewers)

    def authenticate(self, name: str, token: str) -> str | None:
        """The reviewer's name when ``name`` and ``token`` belong together, else None.

        Every account is compared, so the time taken does not tell which name exists."""
        found: str | None = None
        given_name = name.strip().encode()[:MAX_CREDENTIAL_LENGTH]
        given_token = token.encode()[:MAX_CREDENTIAL_LENGTH]
        for reviewer in self._reviewers:
            name_ok = hmac.compare_digest(given_name, reviewer.name.encode())
            token_ok = hmac.compare_digest(given_token, reviewer.token.encode())
            if name_ok and token_ok:
                found = reviewer.name
        return found
