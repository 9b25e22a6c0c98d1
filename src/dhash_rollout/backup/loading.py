"""Getting a backup's database back out: into a SQLite file or a new PostgreSQL database.

Shared by ``verify --restore-test`` (into a scratch database that is then dropped) and by
``restore`` (into a new database that is then swapped in). The member's bytes are hashed again
as they stream, so a file changed after verification is still caught.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from dhash_rollout.backup import postgres_db, sqlite_db
from dhash_rollout.backup.archive import OpenedArchive
from dhash_rollout.backup.manifest import TableStats
from dhash_rollout.backup.tables import compare_tables
from dhash_service.errors import DhashError, IntegrityError


class DigestingReader:
    """Iterate a member's chunks, reporting progress and hashing them on the way."""

    def __init__(self, opened: OpenedArchive, member: str, on_fraction: Callable[[float], None]):
        self.opened = opened
        self.member = member
        self.expected = opened.manifest.members[member]
        self._on_fraction = on_fraction
        self._digest = hashlib.sha256()
        self.done = False

    def __iter__(self) -> Iterator[bytes]:
        seen = 0
        for chunk in self.opened.read_chunks(self.member, self.expected.size):
            self._digest.update(chunk)
            seen += len(chunk)
            self._on_fraction(seen / max(1, self.expected.size))
            yield chunk
        self.done = True

    @property
    def matches(self) -> bool:
        return self.done and self._digest.hexdigest() == self.expected.sha256

    def require_match(self) -> None:
        if not self.matches:
            raise IntegrityError(
                f"{self.opened.label}: member {self.member} changed or is corrupt "
                "(SHA-256 differs from the manifest)",
                detail={"file": self.opened.label},
            )


def ensure_space(directory: Path, needed: int, *, label: str) -> None:
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise DhashError(
            f"{label}: needs {needed} bytes in {directory}, only {free} free",
            detail={"file": label},
        )


def extract_sqlite(reader: DigestingReader, dest: Path) -> None:
    """Write the SQLite member to the new file ``dest`` (fsynced)."""
    ensure_space(dest.parent, reader.expected.size, label=reader.opened.label)
    with dest.open("xb") as fh:
        for chunk in reader:
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())


def remove_sqlite_files(path: Path) -> None:
    for candidate in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm", "-journal"))):
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()


def check_restored(
    label: str, expected: dict[str, TableStats], actual: dict[str, TableStats], *, content: bool
) -> list[str]:
    return [f"{label}: restored {p}" for p in compare_tables(expected, actual, content=content)]


def load_postgres(reader: DigestingReader, target: postgres_db.PgTarget) -> None:
    postgres_db.load(target, reader)


def sqlite_stats(path: Path, *, content: bool) -> dict[str, TableStats]:
    stats = sqlite_db.table_stats(path)
    if content:
        return stats
    return {name: TableStats(rows=s.rows, content_hash="") for name, s in stats.items()}
