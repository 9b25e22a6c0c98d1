"""What deploy and rollback share: a journaled phase runner, the run log, notifications, the
health probe, and the schema facts read from the database and from a release's migrations.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import httpx
import structlog

from dhash_rollout.environments import Environment, environments_file
from dhash_rollout.journal import RUN_PHASE, Journal, Status
from dhash_rollout.plan import Plan, Step
from dhash_rollout.releases import Release
from dhash_rollout.targets import Target
from dhash_service.errors import CheckFailed, DhashError
from dhash_service.logs import redactor

if TYPE_CHECKING:
    from dhash_rollout.notify.notifier import DeliveryReport

Progress = Callable[[str], None]


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


@dataclass
class RunContext:
    """One deploy or rollback in flight: where it journals, logs and reports progress."""

    kind: str
    env: Environment
    target: Target
    journal: Journal
    run_id: str
    base: Path
    log_dir: Path
    backup_dir: Path
    logger: Any
    say: Progress
    results: dict[str, dict[str, Any]] = field(default_factory=dict)

    def start(self, params: dict[str, Any]) -> None:
        self.journal.append(self.run_id, RUN_PHASE, "started", {"kind": self.kind, **params})
        self.logger.info(f"{self.kind}_started", request_id=self.run_id, **params)

    def finish(self, ok: bool, detail: dict[str, Any]) -> None:
        status: Status = "done" if ok else "failed"
        self.journal.append(self.run_id, RUN_PHASE, status, detail)
        log = self.logger.info if ok else self.logger.error
        log(f"{self.kind}_{status}", request_id=self.run_id, **detail)

    def skip(self, step: Step) -> None:
        self.journal.append(self.run_id, step.phase, "skipped", {"reason": step.reason})
        self.logger.info("phase_skipped", request_id=self.run_id, phase=step.phase)
        self.say(f"  - {step.phase}: skipped ({step.reason})")

    @contextlib.contextmanager
    def phase(self, step: Step) -> Iterator[dict[str, Any]]:
        """Journal ``started`` before the body and ``done``/``failed`` after it."""
        self.journal.append(self.run_id, step.phase, "started", {"action": step.action})
        self.logger.info("phase_started", request_id=self.run_id, phase=step.phase)
        self.say(f"  > {step.phase}: {step.action}")
        detail: dict[str, Any] = {}
        began = time.monotonic()
        try:
            yield detail
        except DhashError as exc:
            detail.update(error=exc.message, seconds=round(time.monotonic() - began, 3))
            self.journal.append(self.run_id, step.phase, "failed", detail)
            self.logger.error("phase_failed", request_id=self.run_id, phase=step.phase, **detail)
            self.say(f"  x {step.phase}: {exc.message}")
            raise
        detail["seconds"] = round(time.monotonic() - began, 3)
        self.results[step.phase] = detail
        self.journal.append(self.run_id, step.phase, "done", detail)
        self.logger.info("phase_done", request_id=self.run_id, phase=step.phase, **detail)
        self.say(f"  ✓ {step.phase} ({detail['seconds']:.1f} s)")


def run_steps(
    ctx: RunContext, plan: Plan, handlers: dict[str, Callable[[Step, dict[str, Any]], None]]
) -> None:
    """Run the plan's steps in order; the first failure propagates (after being journaled)."""
    for step in plan.steps:
        if not step.run:
            ctx.skip(step)
            continue
        with ctx.phase(step) as detail:
            handlers[step.phase](step, detail)


def notify(
    ctx: RunContext,
    kind: str,
    message: str,
    *,
    severity: str = "INFO",
    version: str | None = None,
    initiator: str | None = None,
    reason: str | None = None,
    trigger: str | None = None,
    phase: str | None = None,
) -> dict[str, Any]:
    """Tell the environment's channels; delivery problems are reported, never raised."""
    from dhash_rollout.notify import Event, Notifier, Severity

    try:
        notifier = Notifier.from_settings(
            ctx.env.name, channels=ctx.env.channels, log_dir=ctx.log_dir
        )
        event = Event(
            kind=kind,
            env=ctx.env.name,
            message=message,
            severity=Severity.parse(severity),
            version=version,
            initiator=initiator,
            reason=reason,
            trigger=trigger,
            phase=phase,
            run_id=ctx.run_id,  # the key is run id and phase; alerts learn their run
        )
        report = notifier.send(event)
    except DhashError as err:  # bad channel settings or event fields: the run goes on
        ctx.logger.error("notification_not_sent", request_id=ctx.run_id, error=err.message)
        ctx.say(f"notification not sent: {err.message}")
        return {"notification": {"error": err.message}}
    return {"notification": _delivery_summary(report)}


def _delivery_summary(report: DeliveryReport) -> dict[str, str]:
    return {outcome.channel: str(outcome.status) for outcome in report.outcomes}


def check_health(url: str, timeout: float = 30.0) -> dict[str, Any]:
    """``/health`` and ``/ready`` both answer 200 within ``timeout`` (retried, new connections)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        answers: dict[str, Any] = {}
        for path in ("/health", "/ready"):
            try:
                response = httpx.get(f"{url}{path}", timeout=5.0)
            except httpx.HTTPError as exc:
                last = f"{path}: {exc.__class__.__name__}: {exc}"
                break
            if response.status_code != 200:
                last = f"{path}: HTTP {response.status_code} {response.text[:200]}"
                break
            with contextlib.suppress(ValueError):
                answers[path] = response.json()
        else:
            return {"health": answers.get("/health"), "ready": answers.get("/ready")}
        if time.monotonic() >= deadline:
            raise CheckFailed(f"{url} is not healthy: {last}")
        time.sleep(0.5)


# --- schema facts --------------------------------------------------------------------------------


def database_exists(database_url: str) -> bool:
    """False only for a SQLite file that is not there yet (a server database is assumed)."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    if url.get_backend_name() != "sqlite":
        return True
    return bool(url.database) and Path(str(url.database)).exists()


def database_revision(database_url: str) -> str | None:
    """The schema revision stamped in the database, or None for a new/empty database.

    Read straight from ``alembic_version`` so it works for revisions this toolkit does not ship.
    A SQLite file that does not exist yet is reported as empty without creating it.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and (not url.database or not Path(url.database).exists()):
        return None
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT version_num FROM alembic_version")).fetchall()
    except SQLAlchemyError as exc:
        if "alembic_version" in str(exc):
            return None
        raise CheckFailed(f"cannot read the schema revision: {exc.__class__.__name__}") from exc
    finally:
        engine.dispose()
    return str(rows[0][0]) if rows else None


def database_readable(database_url: str) -> bool:
    """A quick integrity probe: SQLite ``PRAGMA quick_check``, else a trivial query."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    url = make_url(database_url)
    if not database_exists(database_url):
        return True  # nothing there to be damaged (and probing must not create the file)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            if url.get_backend_name() == "sqlite":
                result = conn.execute(text("PRAGMA quick_check")).scalar()
                return result == "ok"
            conn.execute(text("SELECT 1"))
            return True
    except SQLAlchemyError:
        return False
    finally:
        engine.dispose()


def release_migrations_dir(release: Release) -> Path:
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    return release.venv / "lib" / pyver / "site-packages" / "dhash_service" / "store" / "migrations"


def _script_directory(release: Release) -> Any:
    from alembic.script import ScriptDirectory

    location = release_migrations_dir(release)
    if not (location / "env.py").exists():
        raise CheckFailed(f"release {release.version} ships no migrations at {location}")
    return ScriptDirectory(str(location))


def release_head(release: Release) -> str | None:
    """The head revision of the migrations a release ships."""
    heads = _script_directory(release).get_heads()
    if len(heads) > 1:
        raise CheckFailed(f"release {release.version} has several migration heads: {heads}")
    return str(heads[0]) if heads else None


def release_revisions(release: Release) -> set[str]:
    """Every revision a release's migrations know."""
    return {str(s.revision) for s in _script_directory(release).walk_revisions()}


def _downgrade_refuses(module: Any) -> bool:
    """A migration is irreversible when it says so or its downgrade only raises."""
    if getattr(module, "irreversible", False):
        return True
    downgrade = getattr(module, "downgrade", None)
    if downgrade is None:
        return True
    try:
        tree = ast.parse(inspect.getsource(downgrade).strip())
    except (OSError, TypeError, SyntaxError):
        return False
    func = tree.body[0]
    body = [
        n
        for n in getattr(func, "body", [])
        if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))
    ]
    return len(body) == 1 and isinstance(body[0], ast.Raise)


def downgrade_reversible(release: Release, current: str | None, target: str | None) -> bool:
    """Whether ``release``'s migrations can take the schema from ``current`` down to ``target``."""
    if current == target or current is None:
        return True
    scripts = _script_directory(release)
    try:
        revisions = list(scripts.iterate_revisions(current, target or "base"))
    except Exception:  # alembic raises several types for an unknown revision path
        return False
    return not any(_downgrade_refuses(rev.module) for rev in revisions if rev.revision != target)


def release_cli(
    release: Release, env: Environment, base: Path, *args: str, timeout: float = 900.0
) -> str:
    """Run ``dhash <args>`` with the release's own code (its migrations, its settings schema)."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    child_env["DHASH_ENVIRONMENTS_FILE"] = str(environments_file(base).resolve())
    command = [str(release.dhash), *args]
    try:
        done = subprocess.run(
            command,
            cwd=base,
            env=child_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckFailed(f"release {release.version}: `dhash {' '.join(args)}`: {exc}") from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
        raise CheckFailed(
            f"release {release.version}: `dhash {' '.join(args)}` exited {done.returncode}: {tail}"
        )
    return done.stdout


def migrate_with(release: Release, env: Environment, base: Path, revision: str | None) -> None:
    """Upgrade to the release's head (``revision=None``) or downgrade to ``revision``."""
    if revision is None:
        release_cli(release, env, base, "migrate", "--env", env.name)
    else:
        release_cli(
            release, env, base, "migrate", "--env", env.name, "--downgrade", revision or "base"
        )
