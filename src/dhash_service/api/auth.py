"""Bearer-token auth for the write and review endpoints; tokens come from ``DHASH_API_TOKENS``.

Tokens are shared secrets, not identities: a caller is named by a short fingerprint of its token
(``token:1a2b3c4d``), which is safe to log and to store as a reviewer. With no token configured
the protected endpoints refuse every request: an unconfigured service fails closed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dhash_service.errors import AuthError

bearer_scheme = HTTPBearer(auto_error=False, description="A token from DHASH_API_TOKENS.")


def token_fingerprint(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Principal:
    """Who made an authenticated request, as far as a shared token can say."""

    name: str


class TokenAuth:
    def __init__(self, tokens: Sequence[str]) -> None:
        self._tokens = tuple(t.encode() for t in tokens if t)

    @property
    def configured(self) -> bool:
        return bool(self._tokens)

    def authenticate(self, credentials: HTTPAuthorizationCredentials | None) -> Principal:
        if not self._tokens:
            raise AuthError("this endpoint needs a bearer token and none is configured")
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AuthError("missing bearer token")
        given = credentials.credentials.encode()
        # Compare with every token, so the time taken does not say which one nearly matched.
        matched = [hmac.compare_digest(given, token) for token in self._tokens]
        if not any(matched):
            raise AuthError("invalid bearer token")
        return Principal(token_fingerprint(credentials.credentials))
