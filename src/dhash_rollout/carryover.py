"""Carry the writes made after a backup across its restore, so a data rollback loses no ingest.

Before the restore, every row of the live database is exported to a JSON-lines file (typed
values, fsynced, renamed into place, so a killed rollback finds it whole or not at all). After
the restore, each exported row whose primary key the restored database does not have, i.e.
every row created since the backup, is inserted again, table by table in foreign-key order,
with the columns the restored schema has.

A row *changed* since the backup is replayed when the audit trail says why: an audit event
written after the backup (one of the re-inserted ``audit_events`` rows) names it as its subject,
so it is an acknowledged write (a reviewer's decision) that must survive like an ingest (issue
12). Its exported values replace the backup's. Changes no audit event explains, and rows deleted
since the backup, are not replayed (the backup's version wins, as the operator asked) and are
reported as not carried over (:meth:`ReapplyResult.not_carried`), for the console, the notice
and ``--json``.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, Table, create_engine, func, select, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from dhash_service.errors import IntegrityError

SKIP_TABLES = frozenset({"alembic_version"})
AUDIT_TABLE = "audit_events"
# The audit trail's subject types and the tables their rows live in.
AUDITED_TABLES = {"review_item": "review_items"}
_BATCH = 500


def _encode(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        ((tag, raw),) = value.items()
        decoders: dict[str, Any] = {
            "$b64": base64.b64decode,
            "$datetime": dt.datetime.fromisoformat,
            "$date": dt.date.fromisoformat,
            "$time": dt.time.fromisoformat,
            "$decimal": decimal.Decimal,
            "$uuid": uuid.UUID,
        }
        if tag in decoders:
            return decoders[tag](raw)
    return value


@dataclass
class ExportResult:
    path: Path
    rows: dict[str, int] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # table -> why

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "rows": self.rows, "unreadable": self.unreadable}


@dataclass
class ReapplyResult:
    inserted: dict[str, int] = field(default_factory=dict)
    changed_since_backup: dict[str, int] = field(default_factory=dict)
    deleted_since_backup: dict[str, int] = field(default_factory=dict)
    dropped_columns: dict[str, list[str]] = field(default_factory=dict)
    skipped_tables: dict[str, str] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)  # changes the audit trail explains

    @property
    def total_inserted(self) -> int:
        return sum(self.inserted.values())

    @property
    def total_updated(self) -> int:
        return sum(self.updated.values())

    def not_carried(self) -> dict[str, str]:
        """Per table, what the live database had that the restored one does not (loud)."""
        out: dict[str, str] = {}
        for table in sorted({*self.changed_since_backup, *self.deleted_since_backup}):
            parts = []
            if changed := self.changed_since_backup.get(table):
                parts.append(
                    f"{changed} row{'s' * (changed != 1)} changed since the backup, not replayed "
                    "(no audit record of the change)"
                )
            if deleted := self.deleted_since_backup.get(table):
                parts.append(
                    f"{deleted} row{'s' * (deleted != 1)} deleted since the backup restored from it"
                )
            out[table] = "; ".join(parts)
        for table, why in self.skipped_tables.items():
            out[table] = f"not re-applied: {why}"
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted,
            "total_inserted": self.total_inserted,
            "updated": self.updated,
            "not_carried": self.not_carried(),
            "changed_since_backup": self.changed_since_backup,
            "deleted_since_backup": self.deleted_since_backup,
            "dropped_columns": self.dropped_columns,
            "skipped_tables": self.skipped_tables,
        }


def _engine(database_url: str) -> Engine:
    return create_engine(make_url(database_url))


def _reflect(conn: Connection) -> MetaData:
    meta = MetaData()
    meta.reflect(bind=conn)
    return meta


def _tables(meta: MetaData) -> list[Table]:
    return [t for t in meta.sorted_tables if t.name not in SKIP_TABLES]


def export_rows(database_url: str, dest: Path) -> ExportResult:
    """Write every row of every table to ``dest`` (JSON lines), atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    result = ExportResult(dest)
    engine = _engine(database_url)
    try:
        with tmp.open("w", encoding="utf-8") as out, engine.connect() as conn:
            for table in _tables(_reflect(conn)):
                count = 0
                try:
                    rows = conn.execution_options(yield_per=_BATCH).execute(select(table))
                    for row in rows.mappings():
                        record = {k: _encode(v) for k, v in row.items()}
                        out.write(json.dumps({"table": table.name, "row": record}) + "\n")
                        count += 1
                except SQLAlchemyError as exc:
                    result.unreadable[table.name] = f"{exc.__class__.__name__}: {exc}"[:300]
                    conn.rollback()
                result.rows[table.name] = count
            out.flush()
            os.fsync(out.fileno())
    finally:
        engine.dispose()
    tmp.replace(dest)
    return result


def _read_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """The exported rows; a damaged file is an :class:`IntegrityError` naming its line."""
    with path.open("r", encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                yield str(record["table"]), {k: _decode(v) for k, v in record["row"].items()}
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise IntegrityError(
                    f"the exported rows {path} are damaged at line {number} "
                    f"({exc.__class__.__name__}): nothing was re-applied",
                    detail={"file": str(path)},
                ) from None


def _pk_key(table: Table, row: dict[str, Any]) -> tuple[Any, ...] | None:
    columns = [c.name for c in table.primary_key.columns]
    if not columns or any(c not in row for c in columns):
        return None
    return tuple(row[c] for c in columns)


def reapply_rows(database_url: str, exported: Path) -> ReapplyResult:
    """Insert the exported rows the (restored) database does not have, and replay the changes
    the audit trail explains, in one transaction."""
    result = ReapplyResult()
    engine = _engine(database_url)
    changed: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {}
    fresh: dict[str, list[dict[str, Any]]] = {}
    try:
        with engine.begin() as conn:
            meta = _reflect(conn)
            tables = {t.name: t for t in _tables(meta)}
            by_table: dict[str, list[dict[str, Any]]] = {}
            for name, row in _read_rows(exported):
                by_table.setdefault(name, []).append(row)
            for name in by_table:
                if name not in tables:
                    result.skipped_tables[name] = "the restored schema has no such table"
            for table in _tables(meta):
                rows = by_table.get(table.name, [])
                if rows:
                    changed[table.name], fresh[table.name] = _reapply_table(
                        conn, table, rows, result
                    )
            _replay_audited(conn, tables, changed, fresh.get(AUDIT_TABLE, []), result)
            _advance_sequences(conn, [t for t in tables.values() if t.name in result.inserted])
    finally:
        engine.dispose()
    return result


def _replay_audited(
    conn: Connection,
    tables: dict[str, Table],
    changed: dict[str, dict[tuple[Any, ...], dict[str, Any]]],
    new_events: list[dict[str, Any]],
    result: ReapplyResult,
) -> None:
    """Replay the changed rows that an audit event written after the backup names."""
    subjects = {
        (AUDITED_TABLES[str(e.get("subject_type"))], e.get("subject_id"))
        for e in new_events
        if str(e.get("subject_type")) in AUDITED_TABLES
    }
    for name, rows in changed.items():
        table = tables[name]
        pk_cols = [c.name for c in table.primary_key.columns]
        if len(pk_cols) != 1:
            continue
        columns = {c.name for c in table.columns}
        replayed = 0
        for key, row in rows.items():
            if (name, key[0]) not in subjects:
                continue
            values = {k: v for k, v in row.items() if k in columns and k not in pk_cols}
            conn.execute(table.update().where(table.c[pk_cols[0]] == key[0]).values(**values))
            replayed += 1
        if replayed:
            result.updated[name] = replayed
            left = result.changed_since_backup.get(name, 0) - replayed
            if left:
                result.changed_since_backup[name] = left
            else:
                result.changed_since_backup.pop(name, None)


def _reapply_table(
    conn: Connection, table: Table, rows: list[dict[str, Any]], result: ReapplyResult
) -> tuple[dict[tuple[Any, ...], dict[str, Any]], list[dict[str, Any]]]:
    """Insert the rows the table lacks; return the rows changed since the backup (by key) and
    the inserted ones."""
    pk_cols = [c.name for c in table.primary_key.columns]
    if not pk_cols:
        result.skipped_tables[table.name] = "no primary key to tell new rows from old ones"
        return {}, []
    existing: dict[tuple[Any, ...], dict[str, Any]] = {}
    for mapping in conn.execute(select(table)).mappings():
        row_now = dict(mapping)
        key = _pk_key(table, row_now)
        if key is not None:
            existing[key] = row_now
    columns = {c.name for c in table.columns}
    dropped = sorted({k for r in rows for k in r} - columns)
    if dropped:
        result.dropped_columns[table.name] = dropped
    fresh: list[dict[str, Any]] = []
    seen: set[tuple[Any, ...]] = set()
    changed: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        key = _pk_key(table, row)
        if key is None:
            continue
        seen.add(key)
        if key in existing:
            if any(existing[key].get(c) != row.get(c) for c in columns if c in row):
                changed[key] = row
            continue
        fresh.append({k: v for k, v in row.items() if k in columns})
    for start in range(0, len(fresh), _BATCH):
        conn.execute(table.insert(), fresh[start : start + _BATCH])
    result.inserted[table.name] = len(fresh)
    if changed:
        result.changed_since_backup[table.name] = len(changed)
    deleted = len(set(existing) - seen)
    if deleted:
        result.deleted_since_backup[table.name] = deleted
    return changed, fresh


def _advance_sequences(conn: Connection, tables: list[Table]) -> None:
    """PostgreSQL: move serial/identity sequences past the ids we inserted explicitly."""
    if conn.dialect.name != "postgresql":
        return
    for table in tables:
        for column in table.primary_key.columns:
            seq = conn.execute(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": table.name, "c": column.name}
            ).scalar()
            if not seq:
                continue
            top = conn.execute(select(func.max(column))).scalar()
            if top is not None:
                conn.execute(text("SELECT setval(:s, :v)"), {"s": seq, "v": int(top)})
