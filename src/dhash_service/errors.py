"""The error tree. Every error the service or the toolkit raises on purpose lives here.

Each error knows the HTTP status the API answers with and the exit code the CLI ends with, so no
route or command hard-codes either::

    DhashError
    ├── ConfigError                 bad settings or arguments            (500 / exit 2)
    ├── InputError                  the caller sent something we refuse  (422 / exit 1)
    │   ├── EmptyInput
    │   ├── UnsupportedFormat       (415)
    │   ├── InputTooLarge           (413)
    │   ├── CorruptInput
    │   ├── LimitExceeded           pixels, pages, frames, members, nesting, duration
    │   ├── UnsafeArchive           zip slip, links, duplicate names
    │   │   └── ResourceLimitExceeded  an isolated decoder hit its memory or CPU limit
    │   ├── TimeBudgetExceeded
    │   └── ClientDisconnected   the client went away; the work was abandoned
    ├── AuthError                   (401)
    │   └── Forbidden               a valid token without the endpoint's scope (403)
    ├── NotFound                    (404)
    ├── Conflict                    (409)
    ├── Unavailable                 store unreachable, index not loaded (503)
    │   └── Overloaded              no extraction slot within the queue limit (503)
    ├── CheckFailed                 a smoke test, gate or preflight item failed (exit 1)
    ├── Locked                      another run holds the lock (409 / exit 3)
    └── IntegrityError              a checksum or manifest does not match (exit 4)
"""

from __future__ import annotations

from typing import ClassVar


class DhashError(Exception):
    """Base of every deliberate error; ``str(err)`` is safe to show to a user."""

    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, *, detail: dict[str, object] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail or {}

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.code, "message": self.message}
        if self.detail:
            body["detail"] = self.detail
        return body


class ConfigError(DhashError):
    exit_code = 2
    code = "config_error"


class InputError(DhashError):
    http_status = 422
    code = "invalid_input"


class EmptyInput(InputError):
    code = "empty_input"


class UnsupportedFormat(InputError):
    http_status = 415
    code = "unsupported_format"


class InputTooLarge(InputError):
    http_status = 413
    code = "input_too_large"


class CorruptInput(InputError):
    code = "corrupt_input"


class LimitExceeded(InputError):
    code = "limit_exceeded"


class ResourceLimitExceeded(LimitExceeded):
    code = "resource_limit_exceeded"


class UnsafeArchive(InputError):
    code = "unsafe_archive"


class TimeBudgetExceeded(InputError):
    code = "time_budget_exceeded"


class ClientDisconnected(InputError):
    http_status = 400
    code = "client_disconnected"


class AuthError(DhashError):
    http_status = 401
    code = "unauthorized"


class Forbidden(AuthError):
    """A valid token without the scope the endpoint needs."""

    http_status = 403
    code = "forbidden"


class NotFound(DhashError):
    http_status = 404
    code = "not_found"


class Conflict(DhashError):
    http_status = 409
    code = "conflict"


class Unavailable(DhashError):
    http_status = 503
    code = "unavailable"


class Overloaded(Unavailable):
    code = "overloaded"


class CheckFailed(DhashError):
    exit_code = 1
    code = "check_failed"


class Locked(DhashError):
    http_status = 409
    exit_code = 3
    code = "locked"


class IntegrityError(DhashError):
    exit_code = 4
    code = "integrity_error"
