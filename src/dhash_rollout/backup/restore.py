"""``dhash restore``: verify, load into a *new* database, compare, then swap it in atomically.

The live database is touched only by the final swap (``os.replace`` of the SQLite file, or one
transaction renaming the PostgreSQL databases), so a restore killed at any earlier moment leaves
it exactly as it was; the next restore removes the half-loaded leftovers. The database that was
live becomes the pre-restore snapshot and is kept (its location is in the result).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from dhash_rollout.backup import postgres_db, sqlite_db
from dhash_rollout.backup.archive import OpenedArchive, open_archive
from dhash_rollout.backup.atomic import fsync_dir
from dhash_rollout.backup.create import dialect_of
from dhash_rollout.backup.failures import reported_failures
from dhash_rollout.backup.faults import FaultHook
from dhash_rollout.backup.loading import (
    DigestingReader,
    check_restored,
    extract_sqlite,
    load_postgres,
    remove_sqlite_files,
    sqlite_stats,
)
from dhash_rollout.backup.naming import TIMESTAMP_FORMAT, lock_path
from dhash_rollout.backup.verify import verify_backup
from dhash_rollout.environments import Environment
from dhash_rollout.runs.locking import hold_lock
from dhash_service.errors import ConfigError, DhashError, IntegrityError, NotFound

Progress = Callable[[str, float], None]


def _silent(_phase: str, _fraction: float) -> None:
    return None


@dataclass(frozen=True)
class RestoreResult:
    backup: Path
    env: str
    database: str  # what was restored into (URL without password, or file path)
    schema_revision: str | None
    snapshot: str | None  # the pre-restore snapshot: a SQLite file or a PostgreSQL database URL
    snapshot_path: Path | None  # the SQLite snapshot file, when there is one
    tables: dict[str, int]
    forced: bool = False
    warnings: tuple[str, ...] = ()
    duration_seconds: float = 0.0
    details: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "backup": str(self.backup),
            "env": self.env,
            "database": self.database,
            "schema_revision": self.schema_revision,
            "snapshot": self.snapshot,
            "tables": self.tables,
            "forced": self.forced,
            "warnings": list(self.warnings),
            "duration_seconds": round(self.duration_seconds, 3),
        }


def restore_backup(
    path: Path,
    env: Environment,
    *,
    force: bool = False,
    compare_content: bool = True,
    progress: Progress | None = None,
    lock_dir: Path | None = None,
    fault_point: str | None = None,
    on_snapshot: Callable[[str], None] | None = None,
) -> RestoreResult:
    """Restore ``path`` into ``env``'s database.

    Refuses (unless ``force``) a backup that fails verification or belongs to another
    environment; never accepts unsafe archive members, whatever ``force`` says. Holds the
    environment's backup lock (in ``lock_dir``, default the backup's directory).

    ``on_snapshot`` is told where the live database will be kept, before the swap replaces it:
    a caller killed right after the swap (before it sees the result) still knows where the
    database that served is (a rollback journals it, to put it back on a later failure).
    """
    report = progress or _silent
    fault = FaultHook(fault_point)
    started = time.monotonic()
    if not path.is_file():
        raise NotFound(f"{path}: no such backup file")
    dialect = dialect_of(env.database_url)
    warnings: list[str] = []
    with (
        reported_failures(
            f"restore of {path} into {env.name}", outcome="the live database was not replaced"
        ),
        hold_lock(lock_path(lock_dir or path.parent, env.name), "restore"),
    ):
        try:
            verify_backup(path, progress=report)
        except IntegrityError as err:
            if not force:
                raise IntegrityError(
                    f"{err.message}; refusing to restore (--force restores it anyway)",
                    detail=err.detail,
                ) from None
            warnings.append(f"verification failed, restoring because of --force: {err.message}")
        opened = open_archive(path)
        with opened.zf:
            manifest = opened.manifest
            if manifest.env != env.name:
                if not force:
                    raise ConfigError(
                        f"{path} is a backup of {manifest.env!r}, not {env.name!r} "
                        "(--force restores it anyway)"
                    )
                warnings.append(f"backup of {manifest.env!r} restored into {env.name!r}")
            if manifest.database.dialect != dialect:
                raise ConfigError(
                    f"{path} holds a {manifest.database.dialect} database; "
                    f"{env.name} uses {dialect}"
                )
            job = _Job(
                opened=opened,
                env=env,
                stamp=datetime.now(UTC).strftime(TIMESTAMP_FORMAT),
                force=force,
                content=compare_content,
                warnings=warnings,
                report=report,
                fault=fault,
                on_snapshot=on_snapshot or (lambda _where: None),
            )
            result = _restore_sqlite(job) if dialect == "sqlite" else _restore_postgres(job)
    return RestoreResult(
        backup=path,
        env=env.name,
        database=result.database,
        schema_revision=manifest.schema_revision,
        snapshot=result.snapshot,
        snapshot_path=result.snapshot_path,
        tables=result.tables,
        forced=force and bool(warnings),
        warnings=tuple(warnings),
        duration_seconds=time.monotonic() - started,
    )


@dataclass(frozen=True)
class _Job:
    opened: OpenedArchive
    env: Environment
    stamp: str
    force: bool
    content: bool
    warnings: list[str]
    report: Progress
    fault: FaultHook
    on_snapshot: Callable[[str], None]

    def accept(self, problems: list[str]) -> None:
        """Refuse on problems, unless forced (then they become warnings)."""
        if not problems:
            return
        if not self.force:
            raise IntegrityError(
                "; ".join(problems) + "; the live database was not touched",
                detail={"file": self.opened.label},
            )
        self.warnings.extend(problems)

    def on_load(self, fraction: float) -> None:
        self.report("load", fraction)
        self.fault.reach_fraction("restore", fraction)

    def reader(self) -> DigestingReader:
        return DigestingReader(self.opened, self.opened.manifest.database.member, self.on_load)

    def check_reader(self, reader: DigestingReader) -> None:
        if not reader.matches:
            self.accept([f"{self.opened.label}: database member differs from the manifest"])


@dataclass(frozen=True)
class _Swapped:
    database: str
    snapshot: str | None
    snapshot_path: Path | None
    tables: dict[str, int]


def _restore_sqlite(job: _Job) -> _Swapped:
    live = sqlite_db.sqlite_path(job.env.database_url)
    live.parent.mkdir(parents=True, exist_ok=True)
    for leftover in live.parent.glob(f".{live.name}.restore-*.tmp*"):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()
    incoming = live.with_name(f".{live.name}.restore-{job.stamp}.tmp")
    snapshot_tmp = live.with_name(f".{live.name}.prerestore-{job.stamp}.tmp")
    snapshot: Path | None = None
    db = job.opened.manifest.database
    try:
        reader = job.reader()
        extract_sqlite(reader, incoming)
        job.check_reader(reader)
        sqlite_db.check_file(incoming, label=job.opened.label)
        actual = sqlite_stats(incoming, content=job.content)
        job.accept(check_restored(job.opened.label, db.tables, actual, content=job.content))
        job.report("compare", 1.0)
        job.fault.reach("restore-before-swap")
        wal = False
        if live.exists():
            wal = _snapshot_live_sqlite(job, live, snapshot_tmp)
            snapshot = live.with_name(f"{live.name}.prerestore-{job.stamp}")
            for suffix in ("-wal", "-journal"):  # a raw copy's own sidecars, kept beside it
                if snapshot_tmp.with_name(snapshot_tmp.name + suffix).exists():
                    os.replace(
                        snapshot_tmp.with_name(snapshot_tmp.name + suffix),
                        snapshot.with_name(snapshot.name + suffix),
                    )
            os.replace(snapshot_tmp, snapshot)
            fsync_dir(live.parent)
            job.on_snapshot(str(snapshot))
        if wal:
            sqlite_db.set_wal(incoming)
        sqlite_db.remove_sidecars(live)
        os.replace(incoming, live)
        fsync_dir(live.parent)
        job.report("swap", 1.0)
        job.fault.reach("restore-after-swap")
    except sqlite3.Error as exc:
        raise DhashError(
            f"restore into {live} failed: SQLite: {exc}; live database untouched"
        ) from None
    except OSError as exc:
        raise DhashError(
            f"restore into {live} failed: {exc.strerror or exc}; live database untouched"
        ) from None
    finally:
        remove_sqlite_files(incoming)
        remove_sqlite_files(snapshot_tmp)
    return _Swapped(
        database=str(live),
        snapshot=str(snapshot) if snapshot else None,
        snapshot_path=snapshot,
        tables={name: s.rows for name, s in actual.items()},
    )


def _snapshot_live_sqlite(job: _Job, live: Path, snapshot_tmp: Path) -> bool:
    """Copy the live database to ``snapshot_tmp``; return whether it was in WAL mode.

    A live file SQLite cannot read (the very case a restore is for) cannot be copied with the
    backup API; its snapshot is then a byte copy of the file and its journal, so nothing is
    lost, and the result carries a warning.
    """
    try:
        sqlite_db.checkpoint_for_swap(live)
        wal = sqlite_db.is_wal(live)
        sqlite_db.snapshot(live, snapshot_tmp, lambda _f: None)
    except sqlite3.DatabaseError as exc:
        remove_sqlite_files(snapshot_tmp)
        job.warnings.append(
            f"the live database {live} was unreadable (SQLite: {exc}); "
            "its pre-restore snapshot is a byte copy"
        )
        for suffix in ("", "-wal", "-journal"):
            source = live.with_name(live.name + suffix)
            if source.exists():
                shutil.copyfile(source, snapshot_tmp.with_name(snapshot_tmp.name + suffix))
        with open(snapshot_tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        return False
    return wal


def _restore_postgres(job: _Job) -> _Swapped:
    target = postgres_db.PgTarget.from_url(job.env.database_url)
    live = target.database
    incoming = postgres_db.scratch_name(live, f"rst_{job.stamp}")
    keep_as = postgres_db.scratch_name(live, f"pre_{job.stamp}")
    db = job.opened.manifest.database
    with postgres_db.admin_connection(target) as admin:
        for leftover in postgres_db.leftover_databases(admin, live):
            postgres_db.drop_database(admin, leftover)
        exists = postgres_db.database_exists(admin, live)
        postgres_db.create_database_like(admin, incoming, live if exists else None)
        swapped = False
        try:
            reader = job.reader()
            load_postgres(reader, target.with_database(incoming))
            job.check_reader(reader)
            actual = postgres_db.stats_of(target.with_database(incoming), content=job.content)
            job.accept(check_restored(job.opened.label, db.tables, actual, content=job.content))
            job.report("compare", 1.0)
            job.fault.reach("restore-before-swap")
            if exists:
                job.on_snapshot(target.with_database(keep_as).display())
            existed = postgres_db.swap(admin, live, incoming, keep_as)
            swapped = True
            job.report("swap", 1.0)
            job.fault.reach("restore-after-swap")
        finally:
            if not swapped:
                with contextlib.suppress(Exception):
                    postgres_db.drop_database(admin, incoming)
    snapshot = target.with_database(keep_as).display() if existed else None
    return _Swapped(
        database=target.display(),
        snapshot=snapshot,
        snapshot_path=None,
        tables={name: s.rows for name, s in actual.items()},
    )
