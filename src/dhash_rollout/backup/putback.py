"""Put the pre-restore database back after a restore whose follow-up failed.

A data rollback swaps a backup in and then brings its schema to the target release and
re-applies the rows written since. When one of those fails, the restored database is neither
what served nor what the rollback wanted; the snapshot the swap kept (a SQLite file beside the
live one, or a renamed PostgreSQL database) is exactly the database as the service left it, so
it goes back into place, and the failed restore is kept aside for inspection, never dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from dhash_rollout.backup import postgres_db, sqlite_db
from dhash_rollout.backup.atomic import fsync_dir
from dhash_rollout.backup.create import dialect_of
from dhash_rollout.backup.naming import TIMESTAMP_FORMAT
from dhash_service.errors import DhashError, NotFound


@dataclass(frozen=True)
class PutBack:
    database: str  # the live database, the snapshot now back in place (no password)
    failed_restore: str  # where the database the failed restore left is kept

    def to_dict(self) -> dict[str, str]:
        return {"database": self.database, "failed_restore": self.failed_restore}


def put_back(database_url: str, snapshot: str) -> PutBack:
    """Swap the pre-restore ``snapshot`` (as :class:`RestoreResult` names it) back in."""
    stamp = datetime.now(UTC).strftime(TIMESTAMP_FORMAT)
    if dialect_of(database_url) == "sqlite":
        return _sqlite(sqlite_db.sqlite_path(database_url), Path(snapshot), stamp)
    return _postgres(database_url, snapshot, stamp)


def _sqlite(live: Path, snapshot: Path, stamp: str) -> PutBack:
    if not snapshot.is_file():
        raise NotFound(f"the pre-restore snapshot {snapshot} is not there: nothing was put back")
    aside = live.with_name(f"{live.name}.failed-restore-{stamp}")
    try:
        for suffix in ("-wal", "-journal", ""):  # the failed restore with its sidecars
            side = live.with_name(live.name + suffix)
            if side.exists():
                os.replace(side, aside.with_name(aside.name + suffix))
        for suffix in ("-wal", "-journal"):  # a byte-copied snapshot keeps its own sidecars
            side = snapshot.with_name(snapshot.name + suffix)
            if side.exists():
                os.replace(side, live.with_name(live.name + suffix))
        os.replace(snapshot, live)
        fsync_dir(live.parent)
    except OSError as exc:
        raise DhashError(
            f"putting {snapshot} back as {live} failed: {exc.strerror or exc} "
            f"(the failed restore: {aside if aside.exists() else live})"
        ) from None
    return PutBack(str(live), str(aside))


def _postgres(database_url: str, snapshot: str, stamp: str) -> PutBack:
    live = postgres_db.PgTarget.from_url(database_url)
    kept = postgres_db.PgTarget.from_url(snapshot).database
    aside = postgres_db.scratch_name(live.database, f"failed_{stamp}")
    with postgres_db.admin_connection(live) as admin:
        if not postgres_db.database_exists(admin, kept):
            raise NotFound(f"the pre-restore database {kept} is not there: nothing was put back")
        postgres_db.swap(admin, live.database, kept, aside)
    return PutBack(live.display(), live.with_database(aside).display())
