"""Check results, the runner that times and collects them, and the JSON-lines log they leave.

Every check run (smoke, logging validation, preflight, daily, weekly, maintenance) is a list of
named checks that pass or fail with a one-line reason. The log is JSON lines so that preflight
can read back whether a smoke run passed; it is written to a temporary name and renamed, so a
half-written log never looks like a finished one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from dhash_service.errors import DhashError

NOT_RUN = "not run"


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: str
    seconds: float


@dataclass
class CheckReport:
    ok: bool
    results: list[CheckResult]
    log_path: Path | None

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        """One line naming what failed, for exceptions and notifications."""
        if self.ok:
            return f"all {len(self.results)} checks passed"
        return "; ".join(f"{r.name}: {r.detail}" for r in self.failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "results": [asdict(r) for r in self.results],
            "log_path": str(self.log_path) if self.log_path else None,
        }


def describe_error(exc: BaseException) -> str:
    """A user-facing one-liner for the errors a check may meet; never a traceback."""
    if isinstance(exc, DhashError):
        return exc.message
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out talking to {_request_url(exc)}"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect to {_request_url(exc)}: {exc}"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"{exc.request.method} {exc.request.url.path} answered {exc.response.status_code}"
    if isinstance(exc, httpx.HTTPError):
        return f"HTTP error: {exc}"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
    return f"{type(exc).__name__}: {exc}"


def _request_url(exc: httpx.RequestError) -> str:
    try:
        return str(exc.request.url)
    except RuntimeError:  # no request attached
        return "the service"


@dataclass
class CheckRun:
    """Runs named checks in order, timing each and turning expected errors into failures.

    A check is a callable returning a short detail string; it fails by raising
    :class:`~dhash_service.errors.CheckFailed` (or any DhashError, HTTP or OS error).
    Programming errors are not caught: they are bugs, not failed checks.
    """

    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    results: list[CheckResult] = field(default_factory=list)

    def check(self, name: str, fn: Callable[[], str]) -> CheckResult:
        started = time.perf_counter()
        try:
            detail = fn()
            ok = True
        except (DhashError, httpx.HTTPError, OSError) as exc:
            detail, ok = describe_error(exc), False
        result = CheckResult(name, ok, detail, round(time.perf_counter() - started, 3))
        self.results.append(result)
        return result

    def skip(self, name: str, reason: str) -> CheckResult:
        """Record a check that could not run (it counts as failed: nothing was verified)."""
        result = CheckResult(name, False, f"{NOT_RUN}: {reason}", 0.0)
        self.results.append(result)
        return result

    def record(self, name: str, ok: bool, detail: str, seconds: float = 0.0) -> CheckResult:
        result = CheckResult(name, ok, detail, round(seconds, 3))
        self.results.append(result)
        return result

    def finish(self, log_path: Path | None = None) -> CheckReport:
        report = CheckReport(
            ok=bool(self.results) and all(r.ok for r in self.results),
            results=list(self.results),
            log_path=log_path,
        )
        if log_path is not None:
            write_log(log_path, self.name, report, self.meta)
        return report


def write_log(path: Path, run: str, report: CheckReport, meta: dict[str, Any]) -> None:
    """Write one JSON line per check and a final summary line, atomically."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [
        json.dumps({"timestamp": now, "run": run, "event": "check", **asdict(r)})
        for r in report.results
    ]
    summary = {"timestamp": now, "run": run, "event": "summary", "ok": report.ok, **meta}
    summary["failed"] = [r.name for r in report.failures]
    lines.append(json.dumps(summary))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class LoggedRun:
    """What a check log says about its run: read back by preflight."""

    run: str
    ok: bool
    timestamp: str
    meta: dict[str, Any]


def read_log_summary(path: Path) -> LoggedRun:
    """The summary line of a log written by :func:`write_log`; CheckFailed when absent/bad."""
    from dhash_service.errors import CheckFailed

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckFailed(f"{path.name} is missing") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise CheckFailed(f"{path.name} is empty")
    try:
        last = json.loads(lines[-1])
    except ValueError:
        raise CheckFailed(f"{path.name} does not end with a JSON summary line") from None
    if not isinstance(last, dict) or last.get("event") != "summary" or "ok" not in last:
        raise CheckFailed(f"{path.name} has no summary line (interrupted run?)")
    meta = {k: v for k, v in last.items() if k not in {"timestamp", "run", "event", "ok"}}
    return LoggedRun(str(last.get("run")), bool(last["ok"]), str(last.get("timestamp")), meta)
