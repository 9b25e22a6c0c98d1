"""JSON-lines logging with redaction: one event per line, secrets never written."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

REDACTED = "[REDACTED]"

# Keys whose values are secrets wherever they appear in an event.
_SECRET_KEYS = re.compile(r"(password|passwd|secret|token|webhook|authorization|api[_-]?key)", re.I)
# Secrets embedded in free text: webhook URLs, bearer tokens, credentials in URLs.
_SECRET_PATTERNS = [
    re.compile(r"https?://[^\s\"'<>]*(hooks?|webhook|webhookb2|workflows)[^\s\"'<>]*", re.I),
    # a token: 6+ token characters with at least one that is not a letter (so the word after
    # "bearer" in "invalid bearer token" is left alone)
    re.compile(r"(?i)(bearer\s+)(?=[A-Za-z0-9._~+/=-]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{6,}"),
    re.compile(r"(?i)(://[^:/\s@]+:)[^@\s]+(@)"),
]


# Shorter values are not secrets worth the name, and hiding them would mangle ordinary text.
MIN_SECRET_CHARS = 6
_WORD_CHAR = r"[A-Za-z0-9_]"


def _literal(secret: str) -> re.Pattern[str]:
    """``secret`` as a whole token: not when it is part of a longer word (a test secret "x"
    inside "FileExistsError")."""
    return re.compile(rf"(?<!{_WORD_CHAR}){re.escape(secret)}(?!{_WORD_CHAR})")


def redact_text(text: str, extra_secrets: tuple[str, ...] = ()) -> str:
    """Replace known secret shapes and any literal secret in ``extra_secrets`` (whole tokens
    only; values shorter than :data:`MIN_SECRET_CHARS` are ignored)."""
    for secret in extra_secrets:
        if secret and len(secret) >= MIN_SECRET_CHARS and secret in text:
            text = _literal(secret).sub(REDACTED, text)
    text = _SECRET_PATTERNS[0].sub(REDACTED, text)
    text = _SECRET_PATTERNS[1].sub(lambda m: m.group(1) + REDACTED, text)
    return _SECRET_PATTERNS[2].sub(lambda m: m.group(1) + REDACTED + m.group(2), text)


def redact_value(key: str, value: Any, extra_secrets: tuple[str, ...] = ()) -> Any:
    if _SECRET_KEYS.search(key) and value not in (None, "", [], {}):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value, extra_secrets)
    if isinstance(value, Mapping):
        return {k: redact_value(str(k), v, extra_secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(key, v, extra_secrets) for v in value]
    return value


class Redactor:
    """structlog processor; literal secrets can be registered at start-up."""

    def __init__(self) -> None:
        self.secrets: tuple[str, ...] = ()

    def register(self, *secrets: str | None) -> None:
        kept = (s for s in secrets if s and len(s) >= MIN_SECRET_CHARS)
        self.secrets = tuple(sorted({*self.secrets, *kept}, key=len))[::-1]

    def __call__(
        self, _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            event_dict[key] = redact_value(key, event_dict[key], self.secrets)
        return event_dict


redactor = Redactor()

# Keys some libraries add for their own console formatter (uvicorn's ANSI-coloured copy of the
# message); in JSON lines they are noise.
_CONSOLE_ONLY_KEYS = ("color_message",)


def _drop_console_only(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in _CONSOLE_ONLY_KEYS:
        event_dict.pop(key, None)
    return event_dict


def configure_logging(
    level: str = "INFO", stream: TextIO | None = None, file: Path | None = None
) -> None:
    """Route structlog and stdlib logging to JSON lines on ``stream`` (and ``file``)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(stream or sys.stderr)]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(file, encoding="utf-8"))
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _drop_console_only,
        redactor,
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level.upper())
    # Alembic announces its dialect at INFO on every context it opens (each readiness probe and
    # index poll); that is noise, not an event. Its warnings and errors still come through.
    logging.getLogger("alembic.runtime.migration").setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
