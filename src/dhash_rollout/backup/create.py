"""``dhash backup create``: one consistent, verifiable archive per run, or nothing at all.

Order of events, each step crash-safe: take the environment's lock, clear what killed runs
left, stream the database dump and the small files into a hidden temp zip (hashing it on the
way), fsync and rename it, then write the ``.sha256`` the same way. Only when both exist is
there a backup. Then verify it from disk and apply retention.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dhash_rollout.backup import postgres_db, sqlite_db
from dhash_rollout.backup.archive import (
    HashingWriter,
    MemberWriter,
    add_member,
    file_chunks,
    open_archive,
)
from dhash_rollout.backup.atomic import atomic_file
from dhash_rollout.backup.catalog import BackupInfo, clean_leftovers, list_backups
from dhash_rollout.backup.checksum import format_checksum_line
from dhash_rollout.backup.failures import reported_failures
from dhash_rollout.backup.faults import FaultHook
from dhash_rollout.backup.loading import remove_sqlite_files
from dhash_rollout.backup.manifest import DatabaseInfo, Manifest, MemberDigest
from dhash_rollout.backup.naming import BackupName, backup_name, checksum_path, lock_path, temp_name
from dhash_rollout.backup.retention import check_retention_days, prune_env_locked
from dhash_rollout.environments import Environment
from dhash_rollout.runs.locking import hold_lock
from dhash_service import __version__
from dhash_service.errors import ConfigError, DhashError, NotFound

Progress = Callable[[str, float], None]
GATES_CONFIG = "quality-gates-config.json"
SQLITE_MEMBER = "database/dhash.sqlite3"
PG_MEMBER = "database/dhash.pgdump"
GATES_MEMBER = "config/quality-gates-config.json"
RELEASE_MEMBER = "release/release.json"


def _silent(_phase: str, _fraction: float) -> None:
    return None


def dialect_of(database_url: str) -> str:
    try:
        backend = make_url(database_url).get_backend_name()
    except ArgumentError as exc:
        raise ConfigError(f"invalid database URL: {exc}") from None
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"backups support SQLite and PostgreSQL, not {backend}")
    return backend


@dataclass(frozen=True)
class _Dumped:
    database: DatabaseInfo
    schema_revision: str | None
    digest: MemberDigest


def create_backup(
    env: Environment,
    backup_dir: Path,
    *,
    retention_days: int | None = None,
    progress: Progress | None = None,
    gates_config: Path | None = None,
    verify: bool = True,
    fault_point: str | None = None,
    clock: Callable[[], datetime] | None = None,
) -> BackupInfo:
    """Back up ``env`` into ``backup_dir``; raise :class:`Locked` (exit 3) when another run
    holds the environment, and leave no valid-looking file behind on any failure.

    ``gates_config`` defaults to ``quality-gates-config.json`` in the working directory; the
    active release is ``<env.root>/current/release.json``; both are included when present.
    """
    report = progress or _silent
    fault = FaultHook(fault_point)
    now = clock or (lambda: datetime.now(UTC))
    dialect = dialect_of(env.database_url)
    keep_for = check_retention_days(retention_days) if retention_days is not None else None
    backup_dir = Path(os.path.abspath(backup_dir))
    with reported_failures(
        f"backup of {env.name}",
        outcome="no backup was written, older backups are untouched",
        where=backup_dir,
    ):
        backup_dir.mkdir(parents=True, exist_ok=True)
        with hold_lock(lock_path(backup_dir, env.name), "backup"):
            clean_leftovers(backup_dir, env.name)
            name = _fresh_name(backup_dir, env.name, now)
            final = backup_dir / name.filename
            gates = gates_config if gates_config is not None else Path.cwd() / GATES_CONFIG
            sha, manifest = _write_archive(
                env,
                dialect=dialect,
                final=final,
                name=name,
                gates=gates,
                report=report,
                fault=fault,
            )
            fault.reach("after-zip-rename")
            with atomic_file(checksum_path(final)) as (_temp, fh):
                fh.write(format_checksum_line(sha, final).encode("ascii"))
                fault.reach("before-checksum-rename")
            info = BackupInfo(
                path=final,
                sha256=sha,
                created_at=name.created_at,
                env=env.name,
                schema_revision=manifest.schema_revision,
                size=final.stat().st_size,
            )
            if verify:
                from dhash_rollout.backup.verify import verify_backup

                info = replace(info, state=verify_backup(final, progress=report).state)
            if keep_for is not None:
                with reported_failures(
                    f"retention after the backup of {env.name}",
                    outcome=f"the new backup {final} is complete; some old backups may remain",
                    where=backup_dir,
                ):
                    pruned = prune_env_locked(
                        backup_dir,
                        env.name,
                        older_than=keep_for,
                        now=now(),
                        keep=final if verify else None,
                    )
                info = replace(info, pruned=tuple(pruned.deleted))
                report("prune", 1.0)
            return info


def _fresh_name(backup_dir: Path, env: str, now: Callable[[], datetime]) -> BackupName:
    """A name not yet used; names have one-second resolution, so wait out a clash."""
    for _ in range(5):
        name = backup_name(env, now())
        final = backup_dir / name.filename
        if not final.exists() and not checksum_path(final).exists():
            return name
        time.sleep(1.0 - (time.time() % 1.0) + 0.01)
    raise DhashError(f"cannot find a free backup name in {backup_dir}")


def _write_archive(
    env: Environment,
    *,
    dialect: str,
    final: Path,
    name: BackupName,
    gates: Path,
    report: Progress,
    fault: FaultHook,
) -> tuple[str, Manifest]:
    when = name.created_at
    with atomic_file(final) as (_temp, fh):
        writer = HashingWriter(fh)
        with zipfile.ZipFile(writer, "w", allowZip64=True) as zf:  # type: ignore[call-overload]
            if dialect == "sqlite":
                dumped = _dump_sqlite(
                    env, zf=zf, final=final, when=when, report=report, fault=fault
                )
            else:
                dumped = _dump_postgres(
                    env, zf=zf, final=final, when=when, report=report, fault=fault
                )
            members = {dumped.database.member: dumped.digest}
            if gates.is_file():
                members[GATES_MEMBER] = add_member(
                    zf, GATES_MEMBER, file_chunks(gates), when, compress=True
                )
            release_file = env.root / "current" / "release.json"
            release: dict[str, object] | None = None
            if release_file.is_file():
                raw = release_file.read_bytes()
                members[RELEASE_MEMBER] = add_member(zf, RELEASE_MEMBER, [raw], when, compress=True)
                release = _json_object(raw)
            manifest = Manifest(
                env=env.name,
                created_at=when.isoformat(),
                host=socket.gethostname(),
                service_version=__version__,
                schema_revision=dumped.schema_revision,
                database=dumped.database,
                members=members,
                release=release,
            )
            add_member(zf, "manifest.json", [manifest.to_json()], when, compress=True)
        fault.reach("before-zip-rename")
    return writer.hexdigest(), manifest


def _json_object(raw: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _dump_sqlite(
    env: Environment,
    *,
    zf: zipfile.ZipFile,
    final: Path,
    when: datetime,
    report: Progress,
    fault: FaultHook,
) -> _Dumped:
    live = sqlite_db.sqlite_path(env.database_url)
    if not live.is_file():
        # The guide backs up before every deploy; the very first one has nothing to save yet.
        raise NotFound(
            f"SQLite database {live} of {env.name} does not exist: nothing to back up yet "
            "(the environment was never deployed or migrated; its first deploy skips the backup)"
        )
    snap = final.with_name(temp_name(final.name + ".sqlite3", secrets.token_hex(4)))

    def on_fraction(fraction: float) -> None:
        report("dump", fraction)
        fault.reach_fraction("dump", fraction)

    try:
        sqlite_db.snapshot(live, snap, on_fraction)
        tables = sqlite_db.table_stats(snap)
        revision = sqlite_db.schema_revision(snap)
        digest = add_member(zf, SQLITE_MEMBER, file_chunks(snap), when, compress=True)
    finally:
        remove_sqlite_files(snap)
    return _Dumped(
        database=DatabaseInfo(
            dialect="sqlite",
            member=SQLITE_MEMBER,
            dump_format="sqlite3",
            server_version=sqlite_db.server_version(),
            tables=tables,
        ),
        schema_revision=revision,
        digest=digest,
    )


def _dump_postgres(
    env: Environment,
    *,
    zf: zipfile.ZipFile,
    final: Path,
    when: datetime,
    report: Progress,
    fault: FaultHook,
) -> _Dumped:
    target = postgres_db.PgTarget.from_url(env.database_url)
    estimate = _previous_dump_size(final.parent, env.name) or postgres_db.estimated_dump_bytes(
        target
    )
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        fraction = min(0.99, done / estimate) if estimate else 0.0
        report("dump", fraction)
        fault.reach_fraction("dump", fraction)

    member = MemberWriter(zf, PG_MEMBER, when, compress=False)  # -Fc is already compressed
    try:
        facts = postgres_db.dump(target, member.write, on_bytes)
    except BaseException:
        member.abort()
        raise
    digest = member.close()
    report("dump", 1.0)
    return _Dumped(
        database=DatabaseInfo(
            dialect="postgresql",
            member=PG_MEMBER,
            dump_format="pg_dump-custom",
            server_version=facts.server_version,
            tables=facts.tables,
        ),
        schema_revision=facts.schema_revision,
        digest=digest,
    )


def _previous_dump_size(backup_dir: Path, env: str) -> int:
    """The last backup's dump size: the best guess of this one's, for the progress bar."""
    for info in list_backups(backup_dir, env)[:1]:
        try:
            opened = open_archive(info.path)
        except DhashError:
            return 0
        with opened.zf:
            digest = opened.manifest.members.get(opened.manifest.database.member)
            return digest.size if digest else 0
    return 0
