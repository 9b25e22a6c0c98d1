"""The notification log: ``logs/notifications_<YYYYMMDD>.log`` (UTC), one JSON object a line.

It is the "file" channel and the record of every other channel's outcome, so a message that
could not be delivered anywhere is still on disk (``tail -f logs/notifications_*.log`` in the
guide). One file per day, not per run: a ``tail -f`` started before a run (its glob expanded
once) must show that run's notices (issue 12). Each line is written with one ``write`` on an
``O_APPEND`` descriptor, so concurrent runs interleave whole lines, never halves.
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .model import Event, Severity

_LEVELS = {
    Severity.INFO: "info",
    Severity.WARN: "warning",
    Severity.ERROR: "error",
    Severity.CRITICAL: "critical",
}


class NotificationLog:
    """Appends to the day's file (the day the notice is written, UTC)."""

    def __init__(self, log_dir: Path, started: datetime | None = None) -> None:
        self.log_dir = log_dir
        self._day = started  # fixed by the caller (tests), else the day of each line
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.log_dir / f"notifications_{self._day or datetime.now(UTC):%Y%m%d}.log"

    def record(self, event: Event, channel: str, status: str, **extra: Any) -> dict[str, Any]:
        """The line for ``event`` on ``channel``: the logging contract's keys plus the message."""
        line: dict[str, Any] = {
            "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": _LEVELS[event.severity],
            "event": "notification",
            "request_id": event.dedupe_key,
            "channel": channel,
            "status": status,
        }
        line.update({k: v for k, v in extra.items() if v is not None})
        line["notification"] = event.to_dict() | {"key": event.dedupe_key}
        return line

    def append(self, line: dict[str, Any]) -> Path:
        """Write ``line``; raises ``OSError`` when the log directory is not writable."""
        data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(f"short write to {self.path}")
            finally:
                os.close(fd)
        return self.path
