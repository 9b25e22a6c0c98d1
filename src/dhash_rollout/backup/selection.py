"""Choosing a backup to trust: the newest one that passes full verification right now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from dhash_rollout.backup.catalog import BackupInfo, list_backups
from dhash_rollout.backup.verify import verify_backup
from dhash_service.errors import IntegrityError


def latest_verified_backup(
    backup_dir: Path,
    env: str,
    max_age: timedelta | None = None,
    *,
    now: datetime | None = None,
) -> BackupInfo | None:
    """Newest backup of ``env`` (younger than ``max_age``) that verifies; None when none does.

    Corrupt ones are skipped (and recorded as failed), so a rollback never picks a bad file.
    """
    when = now or datetime.now(UTC)
    for info in list_backups(backup_dir, env):
        if max_age is not None and info.age(when) > max_age:
            return None
        try:
            return verify_backup(info.path)
        except IntegrityError:
            continue
    return None
