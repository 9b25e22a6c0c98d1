"""Bearer-token auth with scopes; tokens come from ``DHASH_API_TOKENS`` and its scoped siblings.

Every endpoint that costs CPU or reads stored data needs a token with its scope:

* ``read``: ``POST /v1/hash``, ``GET /v1/images/{id}``, ``GET /v1/search``;
* ``write``: ``POST /v1/images``;
* ``review``: ``GET /v1/review``, ``POST /v1/review/{id}``.

``DHASH_API_TOKENS`` grant every scope (so existing deployments keep working);
``DHASH_API_READ_TOKENS`` grant ``read`` (smoke tests, the monitor), ``DHASH_API_WRITE_TOKENS``
``read`` and ``write``, ``DHASH_API_REVIEW_TOKENS`` ``read`` and ``review``. Tokens are shared
secrets, not identities: a caller is named by a short fingerprint of its token
(``token:1a2b3c4d``), which is safe to log and to store as a reviewer. With no token configured
the protected endpoints refuse every request: an unconfigured service fails closed.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from dhash_service.errors import AuthError, Forbidden

bearer_scheme = HTTPBearer(auto_error=False, description="A token from DHASH_API_TOKENS.")

READ = "read"
WRITE = "write"
REVIEW = "review"
ALL_SCOPES = frozenset({READ, WRITE, REVIEW})


def token_fingerprint(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Principal:
    """Who made an authenticated request, as far as a shared token can say."""

    name: str
    scopes: frozenset[str] = ALL_SCOPES


class TokenAuth:
    def __init__(
        self, tokens: Sequence[str], scoped: Mapping[str, Sequence[str]] | None = None
    ) -> None:
        """``tokens`` get every scope; ``scoped`` maps a scope set name to more tokens."""
        grants: dict[bytes, set[str]] = {}
        for token in tokens:
            if token:
                grants.setdefault(token.encode(), set()).update(ALL_SCOPES)
        for scopes, more in (scoped or {}).items():
            for token in more:
                if token:
                    grants.setdefault(token.encode(), set()).update(scopes.split("+"))
        self._grants = tuple((token, frozenset(scopes)) for token, scopes in grants.items())

    @property
    def configured(self) -> bool:
        return bool(self._grants)

    def authenticate(
        self, credentials: HTTPAuthorizationCredentials | None, scope: str | None = None
    ) -> Principal:
        if not self._grants:
            raise AuthError("this endpoint needs a bearer token and none is configured")
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise AuthError("missing bearer token")
        given = credentials.credentials.encode()
        # Compare with every token, so the time taken does not say which one nearly matched.
        granted: frozenset[str] | None = None
        for token, scopes in self._grants:
            if hmac.compare_digest(given, token):
                granted = scopes
        if granted is None:
            raise AuthError("invalid bearer token")
        if scope is not None and scope not in granted:
            raise Forbidden(
                f"this token lacks the {scope!r} scope this endpoint needs",
                detail={"needs": scope, "has": sorted(granted)},
            )
        return Principal(token_fingerprint(credentials.credentials), granted)
