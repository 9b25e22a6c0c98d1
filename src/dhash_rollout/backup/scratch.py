"""A throw-away copy of a backup or of a database, for ``dhash migrate --dry-run --source``.

An operator about to restore across a migration wants to rehearse the migrations on the data
the restore would bring back, not on the live store. This makes that data a database of its
own: a backup archive is verified (outer SHA-256, every member) and loaded as a restore would
load it, then compared row by row with its manifest; a database (a SQLite file or a
PostgreSQL URL) is copied from one consistent snapshot (SQLite's backup API on a read-only
connection, ``pg_dump`` of one snapshot) and compared with what was read. The copy is a temp
SQLite file, or a new ``dhash_scratch_<host>_<pid>_<hex>`` database on the PostgreSQL server;
it is deleted when the context ends, and a later copy drops the ones a killed run of this
host left. The source and the live database are only ever read.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import sqlite3
import tempfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dhash_rollout.backup import postgres_db, sqlite_db
from dhash_rollout.backup.archive import open_archive
from dhash_rollout.backup.loading import (
    DigestingReader,
    check_restored,
    ensure_space,
    extract_sqlite,
    load_postgres,
    sqlite_stats,
)
from dhash_rollout.backup.manifest import TableStats
from dhash_rollout.backup.verify import verify_backup
from dhash_rollout.targets.local.listeners import process_alive
from dhash_service.errors import ConfigError, DhashError, IntegrityError, NotFound
from dhash_service.logs import redact_text

ZIP_MAGIC = b"PK\x03\x04"
SCRATCH_PREFIX = "dhash_scratch_"


@dataclass(frozen=True)
class SourceSpec:
    """What ``--source`` names, before anything is opened."""

    kind: str  # "backup" | "sqlite" | "postgresql"
    path: Path | None = None
    url: str | None = None


def classify_source(text: str, read_head: Callable[[Path], bytes] | None = None) -> SourceSpec:
    """Pure apart from ``read_head``: a URL, a backup archive or a SQLite file.

    A path is a backup when it is a zip (its first bytes, or a ``.zip`` name: a damaged
    archive is still a backup, and its verification says what is wrong), a SQLite database
    when it starts with SQLite's header; anything else is refused as a usage error.
    """
    if not text.strip():
        raise ConfigError("--source is empty: name a backup archive, a SQLite file or a URL")
    if "://" in text:
        try:
            url = make_url(text)
        except (ArgumentError, ValueError):  # the URL may hold a password: not echoed
            raise ConfigError(
                "--source: invalid database URL (dialect://user:password@host:port/database)"
            ) from None
        backend = url.get_backend_name()
        if backend == "postgresql":
            if not url.database:
                raise ConfigError("--source: a PostgreSQL URL must name a database")
            return SourceSpec("postgresql", url=text)
        if backend == "sqlite":
            path = sqlite_db.sqlite_path(text)
            return SourceSpec("sqlite", path=path)
        raise ConfigError(f"--source: migrations run on SQLite and PostgreSQL, not {backend}")
    path = Path(text)
    if not path.exists():
        raise NotFound(f"--source {path}: no such file")
    if not path.is_file():
        raise ConfigError(f"--source {path} is not a file (a backup archive or a SQLite file)")
    head = (read_head or _read_head)(path)
    if head.startswith(ZIP_MAGIC) or path.suffix == ".zip":
        return SourceSpec("backup", path=path)
    if head.startswith(sqlite_db.SQLITE_MAGIC):
        return SourceSpec("sqlite", path=path)
    raise ConfigError(
        f"--source {path} is neither a backup archive (a zip with its .sha256) nor a SQLite "
        "database"
    )


def _read_head(path: Path) -> bytes:
    try:
        with path.open("rb") as fh:
            return fh.read(len(sqlite_db.SQLITE_MAGIC))
    except OSError as exc:
        raise DhashError(f"--source {path}: cannot read: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class ScratchCopy:
    """The copy to migrate: ``url`` carries a password for PostgreSQL, never print it."""

    url: str
    label: str  # what it is a copy of, for the report
    revision: str | None  # the source's schema revision when copied
    rows: dict[str, int]  # the copied tables' row counts (equal to the source's)
    notes: list[str] = field(default_factory=list)
    source_revision: Callable[[], str | None] = lambda: None  # read again after the rehearsal


@contextlib.contextmanager
def scratch_copy(source: str, *, server_url: str | None = None) -> Iterator[ScratchCopy]:
    """A copy of ``source`` for the duration of the context; deleted afterwards.

    ``server_url`` is a PostgreSQL database URL whose server holds the copy of a PostgreSQL
    backup (the environment's); a PostgreSQL database is copied on its own server.
    """
    spec = classify_source(source)
    what = f"copying --source {_shown(spec)}"
    try:
        if spec.kind == "backup":
            assert spec.path is not None
            with _backup_copy(spec.path, server_url) as copy:
                yield copy
        elif spec.kind == "sqlite":
            assert spec.path is not None
            with _sqlite_copy(spec.path) as copy:
                yield copy
        else:
            assert spec.url is not None
            with _postgres_copy(postgres_db.PgTarget.from_url(spec.url)) as copy:
                yield copy
    except OSError as exc:
        place = f" ({exc.filename})" if exc.filename else ""
        raise DhashError(f"{what} failed: {exc.strerror or exc}{place}; source untouched") from None
    except psycopg.Error as exc:
        raise DhashError(
            f"{what} failed: PostgreSQL: {_first_line(exc)}; source untouched"
        ) from None


def _shown(spec: SourceSpec) -> str:
    if spec.url is not None:
        return postgres_db.PgTarget.from_url(spec.url).display()
    return str(spec.path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)


# --- a backup archive ------------------------------------------------------------------------


@contextlib.contextmanager
def _backup_copy(path: Path, server_url: str | None) -> Iterator[ScratchCopy]:
    verify_backup(path)  # IntegrityError (exit 4) naming the file on any mismatch
    opened = open_archive(path)
    with opened.zf:
        manifest = opened.manifest
        db = manifest.database
        label = (
            f"backup {path} (environment {manifest.env}, taken {manifest.created_at}, "
            f"revision {manifest.schema_revision or '(none)'})"
        )
        rows = _plain({name: t.rows for name, t in db.tables.items()})
        reader = DigestingReader(opened, db.member, lambda _f: None)
        if db.dialect == "sqlite":
            with tempfile.TemporaryDirectory(prefix="dhash-scratch-") as tmp:
                copy = Path(tmp) / "scratch.sqlite3"
                extract_sqlite(reader, copy)
                reader.require_match()
                sqlite_db.check_file(copy, label=opened.label)
                _accept(opened.label, db.tables, sqlite_stats(copy, content=True))
                yield ScratchCopy(
                    url=f"sqlite:///{copy}",
                    label=label,
                    revision=manifest.schema_revision,
                    rows=rows,
                    source_revision=lambda: manifest.schema_revision,
                )
            return
        if db.dialect != "postgresql":
            raise IntegrityError(f"{path}: unknown database dialect {db.dialect!r}")
        server = _server_for(path, server_url)
        with _scratch_database(server) as scratch:
            load_postgres(reader, scratch)
            reader.require_match()
            _accept(opened.label, db.tables, postgres_db.stats_of(scratch, content=True))
            yield ScratchCopy(
                url=scratch.sqlalchemy_url(),
                label=label,
                revision=manifest.schema_revision,
                rows=rows,
                notes=[f"the copy is database {scratch.database} on {server.display()}"],
                source_revision=lambda: manifest.schema_revision,
            )


def _server_for(path: Path, server_url: str | None) -> postgres_db.PgTarget:
    if not server_url or not server_url.startswith("postgresql"):
        raise ConfigError(
            f"{path} holds a PostgreSQL database: its copy needs a PostgreSQL server; pass the "
            "--env whose server holds it (or set DHASH_DATABASE_URL to a PostgreSQL database)"
        )
    return postgres_db.PgTarget.from_url(server_url)


def _plain(rows: dict[str, int]) -> dict[str, int]:
    """Table names as the migrations see them (PostgreSQL's stats say ``public.images``)."""
    return {name.removeprefix("public."): n for name, n in rows.items()}


def _accept(label: str, expected: dict[str, TableStats], actual: dict[str, TableStats]) -> None:
    problems = check_restored(label, expected, actual, content=True)
    if problems:
        raise IntegrityError("; ".join(problems), detail={"file": label})


# --- a SQLite file ---------------------------------------------------------------------------


@contextlib.contextmanager
def _sqlite_copy(path: Path) -> Iterator[ScratchCopy]:
    """The backup API from a read-only connection: a consistent copy (committed WAL content
    included) of a file that may be in use, which is never written to."""
    label = f"SQLite database {path}"
    with tempfile.TemporaryDirectory(prefix="dhash-scratch-") as tmp:
        copy = Path(tmp) / "scratch.sqlite3"
        ensure_space(Path(tmp), path.stat().st_size, label=str(path))
        try:
            src = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
            try:
                dst = sqlite3.connect(copy)
                try:
                    src.backup(dst)
                    dst.execute("PRAGMA journal_mode=DELETE")
                    dst.commit()
                finally:
                    dst.close()
            finally:
                src.close()
        except sqlite3.DatabaseError as exc:
            raise IntegrityError(
                f"--source {path}: not a readable SQLite database: {exc}",
                detail={"file": str(path)},
            ) from None
        sqlite_db.check_file(copy, label=f"--source {path}")
        revision = sqlite_db.schema_revision(copy)
        rows = {name: s.rows for name, s in sqlite_stats(copy, content=False).items()}
        yield ScratchCopy(
            url=f"sqlite:///{copy}",
            label=label,
            revision=revision,
            rows=rows,
            source_revision=lambda: _sqlite_revision(path),
        )


def _sqlite_revision(path: Path) -> str | None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        exists = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='alembic_version'"
        ).fetchone()
        if not exists:
            return None
        return ",".join(
            sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))
        )
    finally:
        conn.close()


# --- a PostgreSQL database -------------------------------------------------------------------


@contextlib.contextmanager
def _postgres_copy(source: postgres_db.PgTarget) -> Iterator[ScratchCopy]:
    """``pg_dump`` of one snapshot into a temp file, loaded into a scratch database on the same
    server and compared with the snapshot's own row counts and content hashes."""
    label = f"PostgreSQL database {source.display()}"
    with tempfile.TemporaryDirectory(prefix="dhash-scratch-") as tmp:
        dump_path = Path(tmp) / "source.dump"
        with dump_path.open("wb") as fh:

            def sink(chunk: bytes) -> None:
                fh.write(chunk)

            facts = postgres_db.dump(source, sink, lambda _n: None)
        with _scratch_database(source, like=source.database) as scratch:
            postgres_db.load(scratch, postgres_db.dump_chunks_from(dump_path))
            _accept(label, facts.tables, postgres_db.stats_of(scratch, content=True))
            yield ScratchCopy(
                url=scratch.sqlalchemy_url(),
                label=label,
                revision=facts.schema_revision,
                rows=_plain({name: t.rows for name, t in facts.tables.items()}),
                notes=[f"the copy is database {scratch.database} on the same server"],
                source_revision=lambda: postgres_db.revision_of(source),
            )


def _host_tag() -> str:
    return f"{zlib.crc32(socket.gethostname().encode('utf-8')):08x}"


def scratch_database_name(pid: int, token: str, host_tag: str) -> str:
    return f"{SCRATCH_PREFIX}{host_tag}_{pid}_{token}"


def stale_scratch_databases(
    names: list[str], host_tag: str, alive: Callable[[int], bool]
) -> list[str]:
    """Pure: the scratch databases of this host whose process is gone (a killed rehearsal's)."""
    pattern = re.compile(re.escape(SCRATCH_PREFIX + host_tag) + r"_(\d+)_[0-9a-f]+$")
    return [n for n in names if (m := pattern.match(n)) and not alive(int(m.group(1)))]


@contextlib.contextmanager
def _scratch_database(
    server: postgres_db.PgTarget, *, like: str | None = None
) -> Iterator[postgres_db.PgTarget]:
    """A new empty database on ``server``, dropped afterwards (leftovers of dead runs first)."""
    tag = _host_tag()
    name = scratch_database_name(os.getpid(), secrets.token_hex(4), tag)
    with postgres_db.admin_connection(server) as admin:
        existing = [str(r[0]) for r in admin.execute("SELECT datname FROM pg_database").fetchall()]
        for stale in stale_scratch_databases(existing, tag, process_alive):
            postgres_db.drop_database(admin, stale)
        postgres_db.create_database_like(admin, name, like)
        try:
            yield server.with_database(name)
        finally:
            with contextlib.suppress(psycopg.Error):
                postgres_db.drop_database(admin, name)
