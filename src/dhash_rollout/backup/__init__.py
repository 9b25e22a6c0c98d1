"""Backups with SHA-256 verification, restore and retention (see ``docs/backups.md``).

The library API the CLI and the deploy/rollback pipeline call; every function takes explicit
paths and URLs and raises :mod:`dhash_service.errors` (``Locked`` exit 3, ``IntegrityError``
exit 4).
"""

from __future__ import annotations

from dhash_rollout.backup.catalog import BackupInfo, list_backups
from dhash_rollout.backup.create import create_backup
from dhash_rollout.backup.restore import RestoreResult, restore_backup
from dhash_rollout.backup.retention import PruneReport, parse_age, prune_backups
from dhash_rollout.backup.selection import latest_verified_backup
from dhash_rollout.backup.verify import verify_backup

__all__ = [
    "BackupInfo",
    "PruneReport",
    "RestoreResult",
    "create_backup",
    "latest_verified_backup",
    "list_backups",
    "parse_age",
    "prune_backups",
    "restore_backup",
    "verify_backup",
]
