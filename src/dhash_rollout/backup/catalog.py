"""What is in a backup directory: complete backups (zip + ``.sha256``), their verification
records, and the leftovers of runs that were killed.

A backup whose ``.sha256`` is missing is not a backup: it is never listed, never offered for
restore, and the next run for its environment deletes it.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dhash_rollout.backup.archive import open_archive
from dhash_rollout.backup.atomic import fsync_dir, write_atomically
from dhash_rollout.backup.checksum import read_checksum_file
from dhash_rollout.backup.failures import reported_failures
from dhash_rollout.backup.naming import checksum_path, is_temp_of_env, parse_backup_name
from dhash_service.errors import IntegrityError

RECORD_DIR = ".verified"
VERIFIED = "verified"
UNVERIFIED = "unverified"
FAILED = "failed"


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    sha256: str
    created_at: datetime
    env: str
    schema_revision: str | None
    size: int
    state: str = UNVERIFIED  # verified | unverified | failed (as last recorded)
    pruned: tuple[Path, ...] = ()  # backups that create's retention removed

    def age(self, now: datetime | None = None) -> timedelta:
        return (now or datetime.now(UTC)) - self.created_at

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "created_at": self.created_at.isoformat(),
            "env": self.env,
            "schema_revision": self.schema_revision,
            "size": self.size,
            "state": self.state,
            "pruned": [str(p) for p in self.pruned],
        }


# --- verification records --------------------------------------------------------------------


def record_path(archive: Path) -> Path:
    return archive.parent / RECORD_DIR / f"{archive.name}.json"


def _fingerprint(archive: Path) -> dict[str, int]:
    st = archive.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def write_record(
    archive: Path, sha256: str, *, ok: bool, restore_tested: bool, error: str = ""
) -> None:
    """Remember a verification outcome; best effort (a read-only backup dir still verifies)."""
    try:
        record = {
            "sha256": sha256,
            **_fingerprint(archive),
            "ok": ok,
            "restore_tested": restore_tested,
            "verified_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "error": error,
        }
        target = record_path(archive)
        target.parent.mkdir(exist_ok=True)
        # Advisory (``list`` shows it; nothing trusts it), so no fsync: verify stays read-mostly.
        write_atomically(target, json.dumps(record, sort_keys=True).encode("utf-8"), durable=False)
    except OSError:
        pass


def recorded_state(archive: Path, sha256: str) -> str:
    """The recorded outcome, if the record still describes this very file."""
    try:
        record = json.loads(record_path(archive).read_text(encoding="utf-8"))
        current = _fingerprint(archive)
    except (OSError, ValueError):
        return UNVERIFIED
    if not isinstance(record, dict):
        return UNVERIFIED
    same = (
        record.get("sha256") == sha256
        and record.get("size") == current["size"]
        and record.get("mtime_ns") == current["mtime_ns"]
    )
    if not same:
        return UNVERIFIED
    return VERIFIED if record.get("ok") is True else FAILED


# --- listing -------------------------------------------------------------------------------


def list_backups(backup_dir: Path, env: str | None = None) -> list[BackupInfo]:
    """Complete backups in ``backup_dir`` (newest first), optionally of one environment.

    Cheap: reads the ``.sha256`` and the manifest, not the whole archive; ``state`` is the last
    recorded verification of this exact file.
    """
    backup_dir = Path(os.path.abspath(backup_dir))
    if not backup_dir.exists():
        return []
    with reported_failures(f"listing {backup_dir}", outcome="nothing was changed"):
        if not backup_dir.is_dir():
            raise NotADirectoryError(20, "Not a directory", str(backup_dir))
        return _list(backup_dir, env)


def _list(backup_dir: Path, env: str | None) -> list[BackupInfo]:
    found: list[BackupInfo] = []
    for archive in backup_dir.iterdir():
        parsed = parse_backup_name(archive.name)
        if parsed is None or (env is not None and parsed.env != env):
            continue
        if not checksum_path(archive).is_file() or not archive.is_file():
            continue
        try:
            entry = read_checksum_file(checksum_path(archive), archive)
        except IntegrityError:
            found.append(_unreadable(archive, parsed.env, parsed.created_at))
            continue
        state = recorded_state(archive, entry.sha256)
        revision: str | None = None
        try:
            opened = open_archive(archive)
            with opened.zf:
                revision = opened.manifest.schema_revision
        except IntegrityError:
            state = FAILED
        found.append(
            BackupInfo(
                path=archive,
                sha256=entry.sha256,
                created_at=parsed.created_at,
                env=parsed.env,
                schema_revision=revision,
                size=archive.stat().st_size,
                state=state,
            )
        )
    found.sort(key=lambda b: (b.created_at, b.path.name), reverse=True)
    return found


def _unreadable(archive: Path, env: str, created_at: datetime) -> BackupInfo:
    return BackupInfo(
        path=archive,
        sha256="",
        created_at=created_at,
        env=env,
        schema_revision=None,
        size=archive.stat().st_size,
        state=FAILED,
    )


# --- leftovers -----------------------------------------------------------------------------


def remove_backup_files(archive: Path) -> None:
    """Delete a backup so that no moment leaves a valid-looking pair: ``.sha256`` first."""
    for path in (checksum_path(archive), archive, record_path(archive)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    fsync_dir(archive.parent)


def clean_leftovers(backup_dir: Path, env: str) -> list[Path]:
    """Remove what killed runs for ``env`` left: temp files, zips without a ``.sha256`` (a run
    killed between the two renames), ``.sha256`` files without a zip and stale records.

    Call only while holding the environment's backup lock.
    """
    removed: list[Path] = []
    if not backup_dir.is_dir():
        return removed
    for path in backup_dir.iterdir():
        name = path.name
        if is_temp_of_env(name, env):
            removed.append(path)
            continue
        parsed = parse_backup_name(name)
        if parsed is not None and parsed.env == env and not checksum_path(path).exists():
            removed.append(path)
            continue
        if name.endswith(".zip.sha256"):
            stem = parse_backup_name(name[: -len(".sha256")])
            if (
                stem is not None
                and stem.env == env
                and not (backup_dir / name[: -len(".sha256")]).exists()
            ):
                removed.append(path)
    records = backup_dir / RECORD_DIR
    if records.is_dir():
        for path in records.iterdir():
            parsed = parse_backup_name(path.name.removesuffix(".json"))
            if (
                parsed is not None
                and parsed.env == env
                and not (backup_dir / parsed.filename).exists()
            ):
                removed.append(path)
    for path in removed:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if removed:
        fsync_dir(backup_dir)
    return removed
