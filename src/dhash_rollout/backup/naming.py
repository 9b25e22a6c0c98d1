"""Backup file names: ``dhash_<env>_<YYYYMMDD_HHMMSS>.zip`` (UTC) and its ``.sha256`` sidecar.

The timestamp in the name is the backup's identity and sorts newest-last, which is what the
guide's ``ls -1 backups/dhash_*.zip | sort -r | head -n1`` relies on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

PREFIX = "dhash_"
SUFFIX = ".zip"
CHECKSUM_SUFFIX = ".sha256"
TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
LOCK_DIR = ".locks"
# Temporary files are the final name with a leading dot and a ``.<token>.tmp`` tail, so no glob
# the guide uses (``backups/dhash_*.zip``) ever sees one.
TEMP_SUFFIX = ".tmp"

_ENV_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
_NAME_RE = re.compile(r"^dhash_(?P<env>[a-z0-9][a-z0-9-]{0,39})_(?P<ts>\d{8}_\d{6})\.zip$")


@dataclass(frozen=True)
class BackupName:
    env: str
    created_at: datetime

    @property
    def filename(self) -> str:
        return f"{PREFIX}{self.env}_{self.created_at.strftime(TIMESTAMP_FORMAT)}{SUFFIX}"


def check_env_name(env: str) -> str:
    """Environment names become file names: keep them to a safe alphabet."""
    from dhash_service.errors import ConfigError

    if not _ENV_RE.match(env):
        raise ConfigError(
            f"environment name {env!r} cannot name a backup (use a-z, 0-9 and '-', up to 40)"
        )
    return env


def backup_name(env: str, when: datetime) -> BackupName:
    return BackupName(
        env=check_env_name(env), created_at=when.astimezone(UTC).replace(microsecond=0)
    )


def parse_backup_name(filename: str) -> BackupName | None:
    """The env and UTC time a backup file name encodes, or None when it is not one of ours."""
    match = _NAME_RE.match(filename)
    if not match:
        return None
    try:
        when = datetime.strptime(match["ts"], TIMESTAMP_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
    return BackupName(env=match["env"], created_at=when)


def checksum_path(archive: Path) -> Path:
    return archive.with_name(archive.name + CHECKSUM_SUFFIX)


def lock_path(backup_dir: Path, env: str) -> Path:
    """One lock per environment for everything that writes backups or restores them."""
    return backup_dir / LOCK_DIR / f"{check_env_name(env)}.lock"


def temp_name(final_name: str, token: str) -> str:
    return f".{final_name}.{token}{TEMP_SUFFIX}"


def is_temp_of_env(filename: str, env: str) -> bool:
    """A temp file (or SQLite's -wal/-shm beside one) left by a backup run for ``env``."""
    return filename.startswith(f".{PREFIX}{env}_") and TEMP_SUFFIX in filename
