"""The guide's monthly maintenance: remove backups older than 30 days, rotate and archive logs.

Backup retention is the backup library's policy (:func:`prune_backups`: the newest verified
backup is always kept, whatever its age); this module only applies it with the guide's 30 days.
Closed log files older than a week are gzipped into ``archive/`` beside them
(:mod:`dhash_rollout.checks.log_archive`); a log some process still holds open (the running
service's output) is never touched.
``dry_run`` reports both decisions and changes nothing.
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import partial
from pathlib import Path

from dhash_rollout.backup import prune_backups
from dhash_rollout.checks.log_archive import archive_file, open_paths, plan_archival, scan
from dhash_rollout.checks.paths import backup_dir, log_dir, shown
from dhash_rollout.checks.report import CheckReport, CheckRun
from dhash_rollout.environments import Environment

BACKUP_RETENTION = timedelta(days=30)
ARCHIVE_AFTER_DAYS = 7.0


def service_log_dirs(env: Environment) -> list[Path]:
    """Where a deployed environment's service writes its logs."""
    return [env.shared_dir / "logs"]


def prune(env: Environment, workdir: Path, *, dry_run: bool, retention: timedelta) -> str:
    directory = backup_dir(workdir)
    report = prune_backups(directory, older_than=retention, env=env.name, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    names = ", ".join(p.name for p in report.deleted) or "nothing"
    kept = f"; kept newest verified {report.kept[0].name}" if report.kept else ""
    return f"{verb} {len(report.deleted)} backup(s) older than {retention.days} days: {names}{kept}"


def archive_logs(directory: Path, *, dry_run: bool, after_days: float, keep: list[Path]) -> str:
    files = scan(directory)
    held = open_paths() if files else set()
    planned = plan_archival(
        files, now=time.time(), archive_after_days=after_days, keep=[*keep, *held]
    )
    if not planned:
        return f"no closed logs older than {after_days:g} days"
    if dry_run:
        return f"would archive {len(planned)} file(s): " + ", ".join(f.path.name for f in planned)
    for item in planned:
        archive_file(item.path)
    size = sum(f.size for f in planned)
    return f"archived {len(planned)} file(s), {size} bytes, into archive/"


def run_maintenance(
    env: Environment,
    *,
    workdir: Path,
    dry_run: bool = False,
    retention: timedelta = BACKUP_RETENTION,
    archive_after_days: float = ARCHIVE_AFTER_DAYS,
    keep_logs: list[Path] | None = None,
    log_path: Path | None = None,
) -> CheckReport:
    run = CheckRun("maintenance", meta={"env": env.name, "dry_run": dry_run})
    run.check("backup retention", lambda: prune(env, workdir, dry_run=dry_run, retention=retention))
    dirs = [log_dir(workdir), *service_log_dirs(env)]
    for directory in dict.fromkeys(d.resolve() for d in dirs):
        run.check(
            f"log archival: {shown(directory, workdir)}/",
            partial(
                archive_logs,
                directory,
                dry_run=dry_run,
                after_days=archive_after_days,
                keep=keep_logs or [],
            ),
        )
    return run.finish(log_path)
