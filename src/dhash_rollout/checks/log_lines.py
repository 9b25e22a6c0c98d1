"""What a good service log line is, on plain data: JSON, a known level that fits, no secrets.

The rules the guide's "Validate logging" step implies, applied to every line a window of traffic
produced:

* the line is one JSON object with ``timestamp``, ``level`` and ``event``;
* ``level`` is a standard level, and an access line's level fits its status (5xx is an error,
  2xx/3xx are not warnings or errors);
* an access line (one with a ``status``) carries the request id, and every request the validator
  sent is found by the id it sent as ``X-Request-ID``;
* no secret appears: neither a literal one we know (API tokens, webhook URLs) nor anything the
  service's own redactor would still redact (webhook URLs, bearer tokens, URL passwords).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dhash_service.logs import redact_text

LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})
REQUIRED_FIELDS = ("timestamp", "level", "event")
REQUEST_ID_FIELD = "request_id"
STATUS_FIELDS = ("status", "status_code")
_SERVER_ERROR = 500
_CLIENT_ERROR = 400


@dataclass(frozen=True)
class LineProblem:
    line_no: int
    problem: str

    def __str__(self) -> str:
        return f"line {self.line_no}: {self.problem}"


@dataclass
class LogValidation:
    lines_checked: int = 0
    problems: list[LineProblem] = field(default_factory=list)
    seen_request_ids: set[str] = field(default_factory=set)
    levels: dict[str, int] = field(default_factory=dict)

    def missing(self, request_ids: Collection[str]) -> list[str]:
        return sorted(set(request_ids) - self.seen_request_ids)


def _status_of(record: Mapping[str, Any]) -> int | None:
    for key in STATUS_FIELDS:
        value = record.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def level_problem(level: str, status: int | None) -> str | None:
    """Why ``level`` is wrong for a line (with ``status`` when it is an access line), or None."""
    if level not in LEVELS:
        return f"unknown level {level!r}"
    if status is None:
        return None
    if status >= _SERVER_ERROR and level not in {"error", "critical"}:
        return f"status {status} logged at {level}, expected error"
    if status < _CLIENT_ERROR and level in {"warning", "error", "critical"}:
        return f"status {status} logged at {level}, expected info"
    return None


def secret_problem(raw: str, secrets: Iterable[str]) -> str | None:
    """A description of the secret found in ``raw`` (never the secret itself), or None."""
    for secret in secrets:
        if secret and secret in raw:
            return f"a known secret appears in clear ({len(secret)} chars, starts {secret[:4]!r}…)"
    if redact_text(raw) != raw:
        return "a secret-shaped value (webhook URL, bearer token or URL password) is not redacted"
    return None


def check_line(raw: str, secrets: Iterable[str] = ()) -> tuple[dict[str, Any] | None, list[str]]:
    """Parse one line and list what is wrong with it."""
    problems: list[str] = []
    leak = secret_problem(raw, secrets)
    if leak:
        problems.append(leak)
    try:
        record = json.loads(raw)
    except ValueError:
        return None, [*problems, "not valid JSON"]
    if not isinstance(record, dict):
        return None, [*problems, "not a JSON object"]
    missing = [f for f in REQUIRED_FIELDS if not record.get(f)]
    if missing:
        problems.append(f"missing {', '.join(missing)}")
    level = record.get("level")
    status = _status_of(record)
    if isinstance(level, str):
        wrong = level_problem(level, status)
        if wrong:
            problems.append(wrong)
    elif level is not None:
        problems.append(f"level is not a string: {level!r}")
    if status is not None and not record.get(REQUEST_ID_FIELD):
        problems.append("access line without a request id")
    return record, problems


def validate_lines(lines: Iterable[str], secrets: Collection[str] = ()) -> LogValidation:
    """Check every non-blank line; collect problems, request ids seen and level counts."""
    result = LogValidation()
    for line_no, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        result.lines_checked += 1
        record, problems = check_line(raw.rstrip("\n"), secrets)
        result.problems.extend(LineProblem(line_no, p) for p in problems)
        if record is None:
            continue
        request_id = record.get(REQUEST_ID_FIELD)
        if isinstance(request_id, str) and request_id:
            result.seen_request_ids.add(request_id)
        level = record.get("level")
        if isinstance(level, str):
            result.levels[level] = result.levels.get(level, 0) + 1
    return result
