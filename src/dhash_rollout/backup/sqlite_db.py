"""SQLite: consistent snapshots with the online backup API (WAL content included), never a copy
of the bare file; restore into a new file that is swapped in with ``os.replace``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dhash_rollout.backup.manifest import TableStats
from dhash_service.errors import ConfigError, IntegrityError, NotFound

SQLITE_MAGIC = b"SQLite format 3\x00"
_MASK64 = (1 << 64) - 1


def sqlite_path(database_url: str) -> Path:
    """The database file a ``sqlite:///`` URL names; in-memory databases cannot be backed up."""
    try:
        url = make_url(database_url)
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL: {exc}") from None
    if url.get_backend_name() != "sqlite":
        raise ConfigError(f"not a SQLite URL: {url.render_as_string(hide_password=True)}")
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise ConfigError("only file-backed SQLite databases (sqlite:///path) can be backed up")
    return Path(url.database)


@contextlib.contextmanager
def connect(path: Path, *, must_exist: bool = True) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection that never creates the file by accident."""
    if must_exist and not path.is_file():
        raise NotFound(f"SQLite database {path} does not exist")
    conn = sqlite3.connect(f"file:{path}?mode={'rw' if must_exist else 'rwc'}", uri=True)
    try:
        yield conn
    finally:
        conn.close()


def snapshot(source: Path, dest: Path, on_fraction: Callable[[float], None]) -> None:
    """Copy ``source`` to the new file ``dest`` with the backup API, in ~1% steps.

    The copy sees every committed transaction, including ones still only in the WAL, and is
    converted to rollback-journal mode so the archived file is self-contained.
    """
    with connect(source) as src, connect(dest, must_exist=False) as dst:
        total = max(1, src.execute("PRAGMA page_count").fetchone()[0])
        step = max(1, total // 100)

        def report(_status: int, remaining: int, pages: int) -> None:
            on_fraction(1.0 - remaining / max(1, pages))

        src.backup(dst, pages=step, progress=report)
        dst.execute("PRAGMA journal_mode=DELETE")
        dst.commit()
    on_fraction(1.0)


def check_file(path: Path, *, label: str) -> None:
    """Refuse anything that is not an intact SQLite database."""
    with path.open("rb") as fh:
        if fh.read(len(SQLITE_MAGIC)) != SQLITE_MAGIC:
            raise IntegrityError(f"{label}: the database member is not a SQLite database")
    try:
        with connect(path) as conn:
            result = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.DatabaseError as exc:
        raise IntegrityError(f"{label}: the database member is unreadable: {exc}") from None
    if result != [("ok",)]:
        raise IntegrityError(f"{label}: SQLite integrity_check failed: {result[:3]}")


def table_stats(path: Path) -> dict[str, TableStats]:
    with connect(path) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        stats: dict[str, TableStats] = {}
        for name in names:
            rows, total = 0, 0
            quoted = '"' + name.replace('"', '""') + '"'
            for row in conn.execute(f"SELECT * FROM {quoted}"):  # noqa: S608 - quoted identifier
                digest = hashlib.blake2b(repr(row).encode("utf-8"), digest_size=8).digest()
                total = (total + int.from_bytes(digest, "big")) & _MASK64
                rows += 1
            stats[name] = TableStats(rows=rows, content_hash=f"{total:016x}")
        return stats


def schema_revision(path: Path) -> str | None:
    with connect(path) as conn:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'"
        ).fetchone()
        if not exists:
            return None
        revisions = sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))
    return ",".join(revisions) or None


def server_version() -> str:
    return sqlite3.sqlite_version


def is_wal(path: Path) -> bool:
    """True when the file's header says WAL mode (bytes 18 and 19 are 2)."""
    with path.open("rb") as fh:
        header = fh.read(20)
    return len(header) == 20 and header[18] == 2 and header[19] == 2


def set_wal(path: Path) -> None:
    with connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def checkpoint_for_swap(path: Path) -> None:
    """Fold the WAL into the main file and truncate it, so swapping the file loses nothing and
    no stale WAL is replayed onto the new file; refuse when a writer keeps the WAL busy."""
    with connect(path) as conn:
        busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    wal = path.with_name(path.name + "-wal")
    if busy or (wal.exists() and wal.stat().st_size > 0):
        from dhash_service.errors import Conflict

        raise Conflict(
            f"{path} is being written to; stop the service before restoring",
            detail={"file": str(path)},
        )


def remove_sidecars(path: Path) -> None:
    for suffix in ("-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path.with_name(path.name + suffix))
