"""The guide's routine runbooks: the morning health check and the weekly backup verification.

Daily: the service answers ``/health``, only the environment's own supervised release listens
on its port (no orphan of a dead supervisord, no foreign process sharing the port group), the
newest backup is at most 24 hours old, the filesystems holding ``logs/`` and ``backups/`` have
room, and the last release change's (deploy or promoted canary) monitoring window was not cut
short (``runs.release_change``).
Weekly: the newest seven backups of the
environment verify end to end (outer SHA256 as ``sha256sum -c`` checks it, then the manifest and
every member), which is stronger than the guide's checksum loop and reports each one.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

from dhash_rollout.backup import list_backups, verify_backup
from dhash_rollout.backup.catalog import FAILED
from dhash_rollout.checks.paths import backup_dir, log_dir, shown
from dhash_rollout.checks.report import CheckReport, CheckRun
from dhash_rollout.environments import Environment, api_token
from dhash_rollout.runs.health import probe_health
from dhash_rollout.runs.release_change import last_change_verification
from dhash_rollout.runs.verification import PROBLEMS
from dhash_rollout.targets import get_target
from dhash_service.errors import CheckFailed

MAX_BACKUP_AGE = timedelta(hours=24)
MIN_FREE_FRACTION = 0.10
WEEKLY_COUNT = 7
_GIB = 1024**3


def check_service_health(env: Environment, timeout: float = 10.0) -> str:
    probe_health(env.url, token=api_token(env), require_ready=False, request_timeout=timeout)
    return f"{env.url}/health is OK"


def check_listeners(env: Environment, *, orphans_ok: bool = False) -> str:
    """Who really listens on the port (the kernel's socket table, via the target's status).
    ``orphans_ok``: a deploy's preflight, whose switch stops the orphans of a dead supervisord
    itself; a foreign listener always fails."""
    status = get_target(env).status()
    if "listeners" not in status.extra:
        return f"who listens on port {env.port} is not known for the {env.target} target"
    kinds = ("FOREIGN",) if orphans_ok else ("ORPHAN", "FOREIGN")
    strays = [p for p in status.processes if p.state in kinds]
    if strays:
        who = "; ".join(f"{p.state.lower()} pid {p.pid} ({p.release or '-'})" for p in strays)
        raise CheckFailed(
            f"port {env.port} is shared with processes no slot runs: {who} "
            f"(`dhash release start --env {env.name}` stops orphans; stop foreign ones)"
        )
    serving = [f"{p.name} ({p.release})" for p in status.serving]
    orphans = [f"orphan pid {p.pid} ({p.release})" for p in status.processes if p.state == "ORPHAN"]
    if orphans:  # only with orphans_ok
        serving.append(f"{', '.join(orphans)}, which the switch stops")
    if not serving:
        if not status.extra["listeners"]:  # down: the health check says so already
            return f"nothing listens on port {env.port}"
        raise CheckFailed(f"no supervised release listens on port {env.port}")
    return f"port {env.port}: {', '.join(serving)} only"


def check_backup_age(
    env: Environment, workdir: Path, *, max_age: timedelta = MAX_BACKUP_AGE, now: datetime | None
) -> str:
    directory = backup_dir(workdir)
    backups = list_backups(directory, env.name)
    make_one = f"make one: ./scripts/backup_dhash.sh --env {env.name}"
    if not backups:
        raise CheckFailed(f"no {env.name} backups in {shown(directory, workdir)}/ ({make_one})")
    latest = backups[0]
    if latest.state == FAILED:  # what `dhash backup list` shows for it (issue 12)
        good = next((b for b in backups if b.state != FAILED), None)
        fallback = f"; the newest not failed: {good.path.name}" if good else ""
        raise CheckFailed(
            f"latest backup {latest.path.name} failed its verification (dhash backup list "
            f"--env {env.name}){fallback}; {make_one}"
        )
    age = latest.age(now or datetime.now(UTC))
    hours = int(age.total_seconds() // 3600)
    if age > max_age:
        limit = int(max_age.total_seconds() // 3600)
        raise CheckFailed(
            f"latest backup {latest.path.name} is {hours} hours old (over {limit}; {make_one})"
        )
    return f"backup age: {hours} hours ({latest.path.name})"


def check_disk_space(paths: list[Path], workdir: Path, min_free: float = MIN_FREE_FRACTION) -> str:
    parts, low = [], []
    for path in paths:
        existing = path
        while not existing.is_dir() and existing != existing.parent:
            existing = existing.parent  # not created yet: its files will land on the parent's fs
        usage = shutil.disk_usage(existing)
        free = usage.free / usage.total if usage.total else 0.0
        line = f"{shown(path, workdir)}/ {usage.free / _GIB:.1f} GiB free ({free:.0%})"
        parts.append(line)
        if free < min_free:
            low.append(line)
    if low:
        raise CheckFailed(f"less than {min_free:.0%} free: {'; '.join(low)}")
    return "; ".join(parts)


def run_daily(
    env: Environment, *, workdir: Path, log_path: Path | None = None, now: datetime | None = None
) -> CheckReport:
    run = CheckRun("daily", meta={"env": env.name, "url": env.url})
    run.check("service health", lambda: check_service_health(env))
    run.check("who listens on the port", lambda: check_listeners(env))
    run.check("latest backup age", lambda: check_backup_age(env, workdir, now=now))
    run.check(
        "disk space", lambda: check_disk_space([log_dir(workdir), backup_dir(workdir)], workdir)
    )
    run.check("last deploy verified", lambda: check_last_deploy(env))
    return run.finish(log_path)


def check_last_deploy(env: Environment) -> str:
    """A deploy whose monitoring window was cut short is a problem to look at (nobody knows
    whether the release is good); one made without monitoring, or rolled back by its gates,
    is reported as it is, not as a failure."""
    verification = last_change_verification(env)  # a promoted canary is a release change
    if verification.state in PROBLEMS:
        raise CheckFailed(verification.line)
    return verification.line


def run_weekly(
    env: Environment, *, workdir: Path, count: int = WEEKLY_COUNT, log_path: Path | None = None
) -> CheckReport:
    run = CheckRun("weekly", meta={"env": env.name, "count": count})
    directory = backup_dir(workdir)
    backups = list_backups(directory, env.name)[:count]
    if not backups:
        run.record("backups", False, f"no {env.name} backups in {shown(directory, workdir)}/")
    for info in reversed(backups):  # oldest first, as the guide's loop prints them
        run.check(info.path.name, partial(_verified, info.path))
    return run.finish(log_path)


def _verified(path: Path) -> str:
    info = verify_backup(path)
    return f"verified (sha256 {info.sha256[:12]}…, schema {info.schema_revision or '-'})"
