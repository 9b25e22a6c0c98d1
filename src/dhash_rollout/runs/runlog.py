"""The run's JSON-lines log: ``logs/<kind>_<env>_<YYYYMMDD_HHMMSS>.log``, secrets redacted."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import structlog

from dhash_service.logs import redactor


def run_log_path(log_dir: Path, kind: str, env: str) -> Path:
    """``logs/<kind>_<env>_<YYYYMMDD_HHMMSS>.log``."""
    stamp = datetime.now(UTC).strftime("%Y%m%d_%H%M%S")
    return log_dir / f"{kind}_{env}_{stamp}.log"


def open_run_log(
    log_dir: Path, kind: str, env: str, path: Path | None = None
) -> tuple[Path, TextIO, Any]:
    """The run's JSON-lines log (appended to: the CLI routes other loggers to it too)."""
    path = path or run_log_path(log_dir, kind, env)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a", encoding="utf-8")
    logger = structlog.wrap_logger(
        structlog.WriteLogger(handle),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            redactor,
            structlog.processors.JSONRenderer(),
        ],
    )
    return path, handle, logger
