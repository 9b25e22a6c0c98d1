"""``dhash backup verify``: outer SHA-256, manifest, every member's SHA-256, zip structure, and
optionally a test restore into a scratch database compared row by row with the manifest."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from dhash_rollout.backup import postgres_db, sqlite_db
from dhash_rollout.backup.archive import OpenedArchive, check_members, open_archive
from dhash_rollout.backup.catalog import VERIFIED, BackupInfo, write_record
from dhash_rollout.backup.checksum import CHUNK, read_checksum_file
from dhash_rollout.backup.failures import reported_failures
from dhash_rollout.backup.loading import (
    DigestingReader,
    check_restored,
    extract_sqlite,
    load_postgres,
    sqlite_stats,
)
from dhash_rollout.backup.naming import checksum_path, parse_backup_name
from dhash_service.errors import ConfigError, IntegrityError, NotFound

Progress = Callable[[str, float], None]


def _silent(_phase: str, _fraction: float) -> None:
    return None


def verify_backup(
    path: Path,
    *,
    restore_test: bool = False,
    scratch_database_url: str | None = None,
    progress: Progress | None = None,
) -> BackupInfo:
    """Check ``path`` end to end; raise :class:`IntegrityError` (exit 4) naming the file.

    ``restore_test`` also restores the database into a scratch database (a temp SQLite file,
    or a new database on the PostgreSQL server of ``scratch_database_url``) and compares every
    table's row count and content hash with the manifest.
    """
    report = progress or _silent
    if not path.is_file():
        raise NotFound(f"{path}: no such backup file")
    with reported_failures(f"verifying {path}", outcome="nothing was changed"):
        label = str(path)
        sha = ""
        try:
            entry = read_checksum_file(checksum_path(path), path)
            sha = entry.sha256
            with path.open("rb") as fh:
                actual = _sha256_of(fh, path.stat().st_size, report)
                if actual != entry.sha256:
                    raise IntegrityError(
                        f"{label}: SHA-256 mismatch (file {actual}, "
                        f"{checksum_path(path).name} says {entry.sha256})",
                        detail={"file": label},
                    )
                fh.seek(0)
                opened = open_archive(fh, label=label)  # same open file: no swap in between
                with opened.zf:
                    total = max(1, sum(m.size for m in opened.manifest.members.values()))
                    done = 0

                    def members_progress(n: int) -> None:
                        nonlocal done
                        done += n
                        report("verify-members", done / total)

                    check_members(opened, members_progress)
                    _check_name(path, opened)
                    if restore_test:
                        _restore_test(opened, scratch_database_url, report)
            manifest = opened.manifest
        except IntegrityError as err:
            if sha:
                write_record(path, sha, ok=False, restore_tested=restore_test, error=err.message)
            raise
        write_record(path, sha, ok=True, restore_tested=restore_test)
        parsed = parse_backup_name(path.name)
        return BackupInfo(
            path=path,
            sha256=sha,
            created_at=parsed.created_at if parsed else _created_at(path, manifest.created_at),
            env=manifest.env,
            schema_revision=manifest.schema_revision,
            size=path.stat().st_size,
            state=VERIFIED,
        )


def _created_at(path: Path, recorded: str) -> datetime:
    """A renamed backup's creation time: the manifest's, else the file's modification time."""
    try:
        when = datetime.fromisoformat(recorded)
    except ValueError:
        return datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _sha256_of(fh: BinaryIO, size: int, report: Progress) -> str:
    digest = hashlib.sha256()
    done = 0
    while chunk := fh.read(CHUNK):
        digest.update(chunk)
        done += len(chunk)
        report("verify-checksum", done / max(1, size))
    return digest.hexdigest()


def _check_name(path: Path, opened: OpenedArchive) -> None:
    """A backup renamed to another environment's name is refused."""
    parsed = parse_backup_name(path.name)
    if parsed is not None and parsed.env != opened.manifest.env:
        raise IntegrityError(
            f"{path}: file name says environment {parsed.env!r}, manifest says "
            f"{opened.manifest.env!r}",
            detail={"file": str(path)},
        )


def _restore_test(opened: OpenedArchive, scratch_url: str | None, report: Progress) -> None:
    db = opened.manifest.database
    reader = DigestingReader(opened, db.member, lambda f: report("restore-test", f))
    if db.dialect == "sqlite":
        with tempfile.TemporaryDirectory(prefix="dhash-restore-test-") as tmp:
            scratch = Path(tmp) / "restore-test.sqlite3"
            extract_sqlite(reader, scratch)
            reader.require_match()
            sqlite_db.check_file(scratch, label=opened.label)
            actual = sqlite_stats(scratch, content=True)
    elif db.dialect == "postgresql":
        if not scratch_url:
            raise ConfigError(
                f"{opened.label}: a PostgreSQL restore test needs a server (pass --env or "
                "scratch_database_url)"
            )
        server = postgres_db.PgTarget.from_url(scratch_url)
        name = f"dhash_restore_test_{secrets.token_hex(6)}"
        with postgres_db.admin_connection(server) as admin:
            postgres_db.create_database_like(admin, name, None)
            try:
                scratch_db = server.with_database(name)
                load_postgres(reader, scratch_db)
                reader.require_match()
                actual = postgres_db.stats_of(scratch_db, content=True)
            finally:
                with contextlib.suppress(Exception):
                    postgres_db.drop_database(admin, name)
    else:
        raise IntegrityError(f"{opened.label}: unknown database dialect {db.dialect!r}")
    problems = check_restored(opened.label, db.tables, actual, content=True)
    if problems:
        raise IntegrityError("; ".join(problems), detail={"file": opened.label})
