"""Schema migrations: status, a real dry-run, upgrade and downgrade (see ``docs/migrations.md``).

A dry-run here is not Alembic's ``--sql`` (which never connects): it connects, reads the current
revision, runs the pending migrations inside one transaction on the real database and rolls it
back. PostgreSQL has transactional DDL; SQLite gets it through the engine's explicit-``BEGIN``
recipe (``dhash_service.store.schema.create_engine_for``). The report lists the pending
revisions, what would change (tables, columns, indexes) and every SQL statement executed, and
the database is checked afterwards to be at the revision it started at.

With ``--source`` (:func:`rehearse`) the migrations run for real, committed, on a throw-away
copy of a backup or of another database (made by ``dhash_rollout.backup.scratch``): the data a
restore would bring back, migrated exactly as the live store would be.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.script.revision import RevisionError
from alembic.util import CommandError
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from dhash_service import __version__
from dhash_service.errors import ConfigError, DhashError, Unavailable
from dhash_service.logs import redact_text
from dhash_service.store import schema as store_schema

ConfigFactory = Callable[[str], Config]
LOCK_TIMEOUT = "10s"  # a dry-run waits this long for a table lock, then reports failure


@dataclass(frozen=True)
class RevisionInfo:
    revision: str
    down_revision: str | None
    message: str


@dataclass(frozen=True)
class MigrationStatus:
    database: str  # URL without password
    current: str | None
    head: str
    pending: list[RevisionInfo]
    known: bool = True  # False when the database is at a revision this release does not ship

    @property
    def up_to_date(self) -> bool:
        return self.known and self.current == self.head

    def to_dict(self) -> dict[str, object]:
        return {
            "database": self.database,
            "current": self.current,
            "head": self.head,
            "up_to_date": self.up_to_date,
            "known": self.known,
            "pending": [asdict(r) for r in self.pending],
        }


@dataclass(frozen=True)
class DryRunReport:
    database: str
    direction: str  # "upgrade" | "downgrade"
    start: str | None
    target: str
    pending: list[RevisionInfo]
    changes: list[str]
    statements: list[str]
    ok: bool
    error: str | None
    unchanged: bool  # the database is at ``start`` again after the rollback
    duration_seconds: float
    log_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    # A rehearsal on a copy (``--source``): what the copy was made of, and its tables' rows
    # before and after the migrations ran (a data migration's effect is seen there).
    source: str | None = None
    rows_before: dict[str, int] = field(default_factory=dict)
    rows_after: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["pending"] = [asdict(r) for r in self.pending]
        data["log_path"] = str(self.log_path) if self.log_path else None
        data["duration_seconds"] = round(self.duration_seconds, 3)
        return data


def display_url(database_url: str) -> str:
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return redact_text(database_url)


def _script(config: Config) -> ScriptDirectory:
    return ScriptDirectory.from_config(config)


def _head(script: ScriptDirectory) -> str:
    heads = script.get_heads()
    if len(heads) != 1:
        raise ConfigError(f"migrations must have exactly one head, found {sorted(heads)}")
    return str(heads[0])


def _path(script: ScriptDirectory, upper: str, lower: str | None) -> list[RevisionInfo]:
    """Revisions above ``lower`` up to and including ``upper``, oldest first."""
    revisions = list(script.iterate_revisions(upper, lower or "base"))
    revisions.reverse()
    return [
        RevisionInfo(
            revision=str(r.revision),
            down_revision=r.down_revision if isinstance(r.down_revision, str) else None,
            message=(r.doc or "").strip().splitlines()[0] if r.doc else "",
        )
        for r in revisions
    ]


@contextmanager
def _engine(database_url: str) -> Iterator[sa.Engine]:
    engine = store_schema.create_engine_for(database_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


def _current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _unavailable(database_url: str, exc: Exception) -> Unavailable:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return Unavailable(f"cannot reach {display_url(database_url)}: {redact_text(first)}")


def check_database_url(database_url: str) -> None:
    """Refuse, as a usage error, a URL that is unparsable or names a database we do not run on."""
    try:
        backend = make_url(database_url).get_backend_name()
    except sa.exc.ArgumentError:
        raise ConfigError(f"invalid database URL: {redact_text(database_url)!r}") from None
    if backend not in ("sqlite", "postgresql"):
        raise ConfigError(f"migrations run on SQLite and PostgreSQL, not {backend}")


def _check_revision(revision: str) -> None:
    if not revision.strip():
        raise ConfigError("a target revision is required (a revision id, 'head' or 'base')")


def migration_status(
    database_url: str, *, config_factory: ConfigFactory = store_schema.alembic_config
) -> MigrationStatus:
    """Where the database is, where this release's migrations end, and what lies between."""
    check_database_url(database_url)
    config = config_factory(database_url)
    script = _script(config)
    head = _head(script)
    _require_existing_sqlite(database_url, allow_missing=True)
    if _sqlite_missing(database_url):
        current = None
    else:
        try:
            with _engine(database_url) as engine, engine.connect() as conn:
                current = _current(conn)
        except sa.exc.OperationalError as exc:
            raise _unavailable(database_url, exc) from None
    try:
        pending = _path(script, head, current)
        known = True
    except (CommandError, RevisionError):
        pending, known = [], False
    return MigrationStatus(
        database=display_url(database_url), current=current, head=head, pending=pending, known=known
    )


def upgrade(
    database_url: str,
    revision: str = "head",
    *,
    config_factory: ConfigFactory = store_schema.alembic_config,
) -> MigrationStatus:
    """Migrate up to ``revision`` (default head) for real, then report the status."""
    migration_status(database_url, config_factory=config_factory)  # reachable? (Unavailable)
    _run_command(command.upgrade, database_url, revision, config_factory)
    return migration_status(database_url, config_factory=config_factory)


def downgrade(
    database_url: str,
    revision: str,
    *,
    config_factory: ConfigFactory = store_schema.alembic_config,
) -> MigrationStatus:
    """Migrate down to ``revision`` for real (data in dropped columns/tables is lost)."""
    migration_status(database_url, config_factory=config_factory)  # reachable? (Unavailable)
    _require_existing_sqlite(database_url)
    _run_command(command.downgrade, database_url, revision, config_factory)
    return migration_status(database_url, config_factory=config_factory)


def _run_command(
    fn: Callable[[Config, str], None],
    database_url: str,
    revision: str,
    config_factory: ConfigFactory,
) -> None:
    _check_revision(revision)
    config = config_factory(database_url)
    before = _revision_now(database_url, config_factory)
    try:
        fn(config, revision)
    except (CommandError, RevisionError) as exc:
        raise ConfigError(f"migration to {revision!r} refused: {exc}") from None
    except Exception as exc:  # a migration script may raise anything: report, no traceback
        raise DhashError(
            f"migration to {revision!r} failed: {_first_line(exc)}; "
            f"{_what_stayed(before, _revision_now(database_url, config_factory))}"
        ) from None


def _revision_now(database_url: str, config_factory: ConfigFactory) -> str | None:
    try:
        return migration_status(database_url, config_factory=config_factory).current
    except DhashError:
        return None


def _what_stayed(before: str | None, after: str | None) -> str:
    """The truth after a failed migration: each revision commits on its own, so the ones before
    the failing one may have landed (never "rolled back" when they did; issue 12)."""
    if after == before:
        return f"the schema is unchanged at {before or 'an empty database'}"
    return (
        f"the revisions before it were committed: the schema is now at {after or '(none)'} "
        f"(was {before or 'empty'})"
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)


def _sqlite_missing(database_url: str) -> bool:
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return False
    return not Path(url.database).exists()


def _require_existing_sqlite(database_url: str, *, allow_missing: bool = False) -> None:
    if _sqlite_missing(database_url) and not allow_missing:
        raise ConfigError(f"SQLite database {make_url(database_url).database} does not exist")


# --- dry-run ---------------------------------------------------------------------------------


def _schema_shape(connection: sa.Connection) -> dict[str, dict[str, Any]]:
    """Tables with their columns (name -> type) and indexes, as the database reports them."""
    inspector = sa.inspect(connection)
    shape: dict[str, dict[str, Any]] = {}
    for table in inspector.get_table_names():
        shape[table] = {
            "columns": {
                c["name"]: f"{c['type']}{'' if c.get('nullable', True) else ' NOT NULL'}"
                for c in inspector.get_columns(table)
            },
            "indexes": sorted(str(i["name"]) for i in inspector.get_indexes(table)),
        }
    return shape


def describe_changes(
    before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]
) -> list[str]:
    """Pure: the differences between two schema shapes, one line each."""
    changes: list[str] = []
    for table in sorted(after.keys() - before.keys()):
        cols = ", ".join(f"{n} {t}" for n, t in after[table]["columns"].items())
        changes.append(f"create table {table} ({cols})")
        changes.extend(f"create index {index} on {table}" for index in after[table]["indexes"])
    for table in sorted(before.keys() - after.keys()):
        changes.append(f"drop table {table}")
    for table in sorted(before.keys() & after.keys()):
        old, new = before[table], after[table]
        for col in sorted(new["columns"].keys() - old["columns"].keys()):
            changes.append(f"add column {table}.{col} {new['columns'][col]}")
        for col in sorted(old["columns"].keys() - new["columns"].keys()):
            changes.append(f"drop column {table}.{col}")
        for col in sorted(old["columns"].keys() & new["columns"].keys()):
            if old["columns"][col] != new["columns"][col]:
                changes.append(
                    f"alter column {table}.{col}: {old['columns'][col]} -> {new['columns'][col]}"
                )
        for index in sorted(set(new["indexes"]) - set(old["indexes"])):
            changes.append(f"create index {index} on {table}")
        for index in sorted(set(old["indexes"]) - set(new["indexes"])):
            changes.append(f"drop index {index} on {table}")
    return changes


def dry_run(
    database_url: str,
    log_path: Path | None = None,
    *,
    target: str = "head",
    direction: str = "upgrade",
    config_factory: ConfigFactory = store_schema.alembic_config,
) -> DryRunReport:
    """Run the pending migrations for real inside one transaction, then roll it back.

    Never raises for a failing migration: the report says ``ok=False`` and why (the CLI exits
    1). Raises :class:`Unavailable` when the database cannot be reached at all.
    """
    if direction not in ("upgrade", "downgrade"):
        raise ConfigError(f"unknown direction {direction!r}")
    check_database_url(database_url)
    _check_revision(target)
    if log_path is not None and log_path.is_dir():
        raise ConfigError(f"--log {log_path} is a directory; name a file")
    started = time.monotonic()
    config = config_factory(database_url)
    script = _script(config)
    notes: list[str] = []
    if _sqlite_missing(database_url):
        if direction == "downgrade":
            raise ConfigError(f"SQLite database {make_url(database_url).database} does not exist")
        notes.append("the database does not exist yet; dry-run ran on an empty scratch database")
        with tempfile.TemporaryDirectory(prefix="dhash-dryrun-") as tmp:
            scratch = f"sqlite:///{Path(tmp) / 'scratch.sqlite3'}"
            report = _dry_run_on(scratch, script, config_factory, target, direction)
    else:
        report = _dry_run_on(database_url, script, config_factory, target, direction)
    report = DryRunReport(
        **{
            **report.__dict__,
            "database": display_url(database_url),
            "duration_seconds": time.monotonic() - started,
            "log_path": log_path,
            "notes": notes + report.notes,
        }
    )
    if log_path is not None:
        write_dry_run_log(report, log_path)
    return report


@contextmanager
def _captured(target: sa.Connection | type[sa.Engine], statements: list[str]) -> Iterator[None]:
    """Append every statement ``target`` sends meanwhile to ``statements`` (the report's list,
    with parameters), however the migration ends."""

    def capture(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
    ) -> None:
        text = statement.strip()
        statements.append(f"{text}  -- {parameters!r}" if parameters else text)

    sa.event.listen(target, "before_cursor_execute", capture)
    try:
        yield
    finally:
        sa.event.remove(target, "before_cursor_execute", capture)


def _dry_run_on(
    database_url: str,
    script: ScriptDirectory,
    config_factory: ConfigFactory,
    target: str,
    direction: str,
) -> DryRunReport:
    statements: list[str] = []

    error: str | None = None
    changes: list[str] = []
    pending: list[RevisionInfo] = []
    start: str | None = None
    try:
        with _engine(database_url) as engine:
            with engine.connect() as conn:
                sqlite = conn.dialect.name == "sqlite"
                if sqlite:
                    _foreign_keys_off(conn)
                    conn.execution_options(sqlite_begin="IMMEDIATE")  # takes the write lock
                transaction = conn.begin()
                try:
                    if conn.dialect.name == "postgresql":
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    start = _current(conn)
                    pending, resolved = _planned(script, start, target, direction)
                    before = _schema_shape(conn)
                    config = config_factory(database_url)
                    config.attributes["connection"] = conn
                    with _captured(conn, statements):
                        run = command.upgrade if direction == "upgrade" else command.downgrade
                        run(config, resolved)
                    changes = describe_changes(before, _schema_shape(conn))
                    if sqlite and (
                        broken := conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    ):
                        error = f"migration would leave broken foreign keys: {broken[:5]}"
                    reached = _current(conn)
                    expected = None if resolved == "base" else resolved
                    if reached != expected and error is None:
                        error = f"migrations ended at {reached!r}, expected {expected!r}"
                except Exception as exc:  # a migration script may raise anything: report it
                    error = _first_line(exc)
                finally:
                    transaction.rollback()
            with engine.connect() as check:
                now_at = _current(check)
    except sa.exc.OperationalError as exc:
        raise _unavailable(database_url, exc) from None
    unchanged = now_at == start
    if not unchanged and error is None:
        error = f"database is at {now_at!r} after the rollback, expected {start!r}"
    return DryRunReport(
        database=display_url(database_url),
        direction=direction,
        start=start,
        target=target,
        pending=pending,
        changes=changes,
        statements=statements,
        ok=error is None,
        error=error,
        unchanged=unchanged,
        duration_seconds=0.0,
    )


def _foreign_keys_off(conn: sa.Connection) -> None:
    """As the real SQLite upgrade does (``store/migrations/env.py``): batch mode rebuilds tables
    (copy, DROP, rename) and with foreign keys on the DROP would cascade into child rows. SQLite
    ignores the pragma inside a transaction, so it is set before ours begins; the connection is
    not pooled (NullPool), so the setting dies with it."""
    raw = conn.connection.driver_connection
    assert raw is not None
    raw.execute("PRAGMA foreign_keys = OFF")


def _resolve(script: ScriptDirectory, revision: str) -> str:
    if revision == "head":
        return _head(script)
    rev = script.get_revision(revision)
    if rev is None:
        raise ConfigError(f"unknown revision {revision!r}")
    return str(rev.revision)


def _planned(
    script: ScriptDirectory, start: str | None, target: str, direction: str
) -> tuple[list[RevisionInfo], str]:
    """The revisions a move from ``start`` to ``target`` passes, and the resolved target."""
    try:
        if direction == "upgrade":
            resolved = _resolve(script, target)
            return _path(script, resolved, start), resolved
        if target == "base":
            steps = _path(script, start, None) if start else []
        else:
            steps = _path(script, start, _resolve(script, target)) if start else []
        steps.reverse()
        return steps, target if target == "base" else _resolve(script, target)
    except (CommandError, RevisionError) as exc:
        raise ConfigError(f"cannot plan {direction} from {start!r} to {target!r}: {exc}") from None


def _row_counts(connection: sa.Connection) -> dict[str, int]:
    return {
        table: int(
            connection.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one()
        )
        for table in sorted(sa.inspect(connection).get_table_names())
    }


def _copy_state(url: str) -> tuple[str | None, dict[str, dict[str, Any]], dict[str, int]]:
    with _engine(url) as engine, engine.connect() as conn:
        return _current(conn), _schema_shape(conn), _row_counts(conn)


def rehearse(
    copy_url: str,
    log_path: Path | None = None,
    *,
    source: str,
    source_revision: Callable[[], str | None],
    target: str = "head",
    direction: str = "upgrade",
    notes: list[str] | None = None,
    config_factory: ConfigFactory = store_schema.alembic_config,
) -> DryRunReport:
    """Run the migrations for real on ``copy_url``, a throw-away copy of ``source``.

    Unlike :func:`dry_run` nothing is rolled back: the copy is migrated exactly as the live
    store would be (each revision committed, statements that cannot run in a transaction
    included), then its revision, schema and row counts are read. ``source_revision`` reads
    the source's revision again afterwards: ``unchanged`` says the source was left alone.
    Never raises for a failing migration (``ok=False`` and why).
    """
    if direction not in ("upgrade", "downgrade"):
        raise ConfigError(f"unknown direction {direction!r}")
    _check_revision(target)
    if log_path is not None and log_path.is_dir():
        raise ConfigError(f"--log {log_path} is a directory; name a file")
    started = time.monotonic()
    script = _script(config_factory(copy_url))
    try:
        start, before, rows_before = _copy_state(copy_url)
    except sa.exc.OperationalError as exc:
        raise _unavailable(copy_url, exc) from None
    source_before = source_revision()
    pending, resolved = _planned(script, start, target, direction)
    statements: list[str] = []

    error: str | None = None
    try:
        with _captured(sa.Engine, statements):  # every engine: the one env.py makes
            run = command.upgrade if direction == "upgrade" else command.downgrade
            run(config_factory(copy_url), resolved)
    except Exception as exc:  # a migration script may raise anything: report it
        error = _first_line(exc)
    try:
        reached, after, rows_after = _copy_state(copy_url)
    except sa.exc.OperationalError as exc:
        raise _unavailable(copy_url, exc) from None
    expected = None if resolved == "base" else resolved
    if error is None and reached != expected:
        error = f"migrations ended at {reached!r}, expected {expected!r}"
    elif error is not None:
        error += f"; {_what_stayed(start, reached)} on the copy"
    source_now = source_revision()
    unchanged = source_now == source_before
    if not unchanged and error is None:
        error = f"the source moved from {source_before!r} to {source_now!r} meanwhile"
    report = DryRunReport(
        database=display_url(copy_url),
        direction=direction,
        start=start,
        target=target,
        pending=pending,
        changes=describe_changes(before, after),
        statements=statements,
        ok=error is None,
        error=error,
        unchanged=unchanged,
        duration_seconds=time.monotonic() - started,
        log_path=log_path,
        notes=[
            "the migrations ran for real on a copy, which was then deleted; "
            "the source and the live database were only read",
            *(notes or []),
        ],
        source=source,
        rows_before=rows_before,
        rows_after=rows_after,
    )
    if log_path is not None:
        write_dry_run_log(report, log_path)
    return report


def write_dry_run_log(report: DryRunReport, path: Path) -> None:
    """The human-readable ``migrate-dryrun.log`` the guide's checklist asks for."""
    rows = [
        f"- {table}: {report.rows_before.get(table, '-')} -> {report.rows_after.get(table, '-')}"
        for table in sorted(report.rows_before.keys() | report.rows_after.keys())
    ]
    where = (
        [f"source: {report.source}", f"database: a copy ({report.database})"]
        if report.source
        else [f"database: {report.database}"]
    )
    unchanged = (
        f"source unchanged: {'yes' if report.unchanged else 'NO'}"
        if report.source
        else f"database unchanged after rollback: {'yes' if report.unchanged else 'NO'}"
    )
    statements = (
        f"## SQL executed on the copy ({len(report.statements)})"
        if report.source
        else f"## SQL executed inside the rolled-back transaction ({len(report.statements)})"
    )
    lines = [
        f"# dhash migrate dry-run ({report.direction}) at "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}",
        *where,
        f"version: {__version__}",  # whose migrations ran: preflight matches the deploy's
        f"current revision: {report.start or '(none)'}",
        f"target: {report.target}",
        f"result: {'OK' if report.ok else 'FAILED'}"
        + (f" - {report.error}" if report.error else ""),
        unchanged,
        f"duration: {report.duration_seconds:.3f}s",
        *(f"note: {n}" for n in report.notes),
        "",
        f"## pending revisions ({len(report.pending)})",
        *(f"- {r.revision}: {r.message}" for r in report.pending),
        "",
        f"## changes ({len(report.changes)})",
        *(f"- {c}" for c in report.changes),
        "",
        *([f"## rows per table, before -> after ({len(rows)})", *rows, ""] if rows else []),
        statements,
        *(f"{s};" for s in report.statements),
        "",
    ]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(redact_text("\n".join(lines)), encoding="utf-8")
    except OSError as exc:
        outcome = "passed" if report.ok else "failed"
        raise DhashError(
            f"the dry-run {outcome} (rolled back) but its log {path} could not be written: "
            f"{exc.strerror or exc}"
        ) from None
