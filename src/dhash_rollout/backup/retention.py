"""Retention: which backups may go. The policy is pure; :func:`prune_backups` applies it.

Rule: a backup older than the retention age is deleted, except the newest *verified* backup of
each environment, which is kept whatever its age (if none verifies, the newest is kept). A dry
run reports the same decision and deletes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dhash_rollout.backup.catalog import BackupInfo, list_backups, remove_backup_files
from dhash_rollout.backup.failures import reported_failures
from dhash_rollout.backup.naming import lock_path
from dhash_rollout.runs.locking import hold_lock
from dhash_service.errors import ConfigError, IntegrityError

_AGE_RE = re.compile(r"^\s*(?P<n>\d+)\s*(?P<unit>[mhdw]?)\s*$")
_UNITS = {
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "w": timedelta(weeks=1),
}
# Ages are subtracted from today's date; beyond a century that date stops existing.
MAX_AGE_DAYS = 36_500


def parse_age(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``; a bare number means days (at most 100 years)."""
    match = _AGE_RE.match(text)
    if not match:
        raise ConfigError(f"invalid age {text!r}: use a number with m, h, d or w (e.g. 30d)")
    unit = _UNITS[match["unit"] or "d"]
    count = int(match["n"])
    if count * int(unit.total_seconds()) > MAX_AGE_DAYS * 86_400:
        raise ConfigError(f"invalid age {text!r}: at most {MAX_AGE_DAYS} days")
    return count * unit


def check_retention_days(days: int) -> timedelta:
    """``--retention-days N`` as an age, refused (before any work) when out of range."""
    if not 1 <= days <= MAX_AGE_DAYS:
        raise ConfigError(f"--retention-days must be between 1 and {MAX_AGE_DAYS}, not {days}")
    return timedelta(days=days)


def expired(
    backups: Sequence[BackupInfo], *, now: datetime, older_than: timedelta, keep: Path | None
) -> list[BackupInfo]:
    """Backups older than ``older_than`` at ``now``, never ``keep`` (the newest verified)."""
    cutoff = now - older_than
    return [b for b in backups if b.created_at < cutoff and b.path != keep]


@dataclass(frozen=True)
class PruneReport:
    deleted: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # protected newest verified, per env
    dry_run: bool = False

    def to_dict(self) -> dict[str, object]:
        return {
            "deleted": [str(p) for p in self.deleted],
            "kept": [str(p) for p in self.kept],
            "dry_run": self.dry_run,
        }


def newest_verified(backups: Sequence[BackupInfo]) -> Path | None:
    """Walk newest first and fully verify until one passes; fall back to the newest."""
    from dhash_rollout.backup.verify import verify_backup

    for info in backups:
        try:
            return verify_backup(info.path).path
        except IntegrityError:
            continue
    return backups[0].path if backups else None


def prune_env_locked(
    backup_dir: Path,
    env: str,
    *,
    older_than: timedelta,
    now: datetime | None = None,
    dry_run: bool = False,
    keep: Path | None = None,
) -> PruneReport:
    """Apply retention to one environment; the caller holds its backup lock."""
    backups = list_backups(backup_dir, env)
    when = now or datetime.now(UTC)
    if not any(b.created_at < when - older_than for b in backups):
        return PruneReport(kept=[keep] if keep else [], dry_run=dry_run)
    protected = keep or newest_verified(backups)
    doomed = expired(backups, now=when, older_than=older_than, keep=protected)
    if not dry_run:
        for info in doomed:
            remove_backup_files(info.path)
    return PruneReport(
        deleted=[b.path for b in doomed], kept=[protected] if protected else [], dry_run=dry_run
    )


def prune_backups(
    backup_dir: Path,
    *,
    older_than: timedelta,
    env: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> PruneReport:
    """``dhash backup prune``: retention for one environment or for every one found."""
    envs = sorted({b.env for b in list_backups(backup_dir, env)}) if env is None else [env]
    report = PruneReport(dry_run=dry_run)
    outcome = "nothing was deleted" if dry_run else "the newest verified backup is kept"
    for name in envs:
        with (
            reported_failures(f"pruning {backup_dir}", outcome=outcome),
            hold_lock(lock_path(backup_dir, name), "backup prune"),
        ):
            one = prune_env_locked(
                backup_dir, name, older_than=older_than, now=now, dry_run=dry_run
            )
        report.deleted.extend(one.deleted)
        report.kept.extend(one.kept)
    return report
