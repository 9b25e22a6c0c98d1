"""Keep webhook URLs and SMTP passwords out of every log line, error and report.

Configured secrets are registered with the service's structlog redactor, and a filter on the
``httpx``/``httpcore`` loggers rewrites their records before any handler sees them (httpx logs
each request URL at INFO, and a webhook URL *is* the credential).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

from dhash_service.logs import redact_text, redactor

_THIRD_PARTY_LOGGERS = ("httpx", "httpcore")
_install_lock = threading.Lock()


_TOKEN_MIN_CHARS = 16  # path segments and query values this long are treated as tokens


def secret_forms(secret: str) -> list[str]:
    """The secret and the pieces of it a library might print on its own (path, query, token)."""
    forms = {secret}
    if "://" in secret:
        parts = urlsplit(secret)
        forms.add(secret.split("://", 1)[1])
        if len(parts.path) >= 12:
            forms.update({parts.path, unquote(parts.path)})
        pieces = [*parts.path.split("/"), parts.query, *parts.query.split("&")]
        pieces += [p.split("=", 1)[-1] for p in parts.query.split("&")]
        forms.update(p for p in pieces if len(p) >= _TOKEN_MIN_CHARS)
        forms.update(unquote(p) for p in pieces if len(p) >= _TOKEN_MIN_CHARS)
    return sorted((f for f in forms if len(f) >= 4), key=len, reverse=True)


def register_secrets(secrets: Iterable[str | None]) -> None:
    """Make every later log record and :func:`redact` call hide these values."""
    forms = [form for secret in secrets if secret for form in secret_forms(secret)]
    if forms:
        redactor.register(*forms)
    _install_filters()


def redact(text: str) -> str:
    """``text`` without any registered secret or secret-shaped URL."""
    return redact_text(text, redactor.secrets)


class _RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        return True


def _install_filters() -> None:
    with _install_lock:
        for name in _THIRD_PARTY_LOGGERS:
            logger = logging.getLogger(name)
            if not any(isinstance(f, _RedactingFilter) for f in logger.filters):
                logger.addFilter(_RedactingFilter())
