"""Carry the writes made after a backup across its restore, so a data rollback loses no ingest.

Before the restore, every row of the live database is exported to a JSON-lines file (typed
values, fsynced, renamed into place, so a killed rollback finds it whole or not at all). After
the restore, each exported row whose primary key the restored database does not have, i.e.
every row created since the backup, is inserted again, table by table in foreign-key order,
with the columns the restored schema has. Rows changed or deleted since the backup are counted
and reported, not replayed: the backup's version of them wins, as the operator asked.
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

SKIP_TABLES = frozenset({"alembic_version"})
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

    @property
    def total_inserted(self) -> int:
        return sum(self.inserted.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "inserted": self.inserted,
            "total_inserted": self.total_inserted,
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
    with path.open("r", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                yield str(record["table"]), {k: _decode(v) for k, v in record["row"].items()}


def _pk_key(table: Table, row: dict[str, Any]) -> tuple[Any, ...] | None:
    columns = [c.name for c in table.primary_key.columns]
    if not columns or any(c not in row for c in columns):
        return None
    return tuple(row[c] for c in columns)


def reapply_rows(database_url: str, exported: Path) -> ReapplyResult:
    """Insert the exported rows the (restored) database does not have, in one transaction."""
    result = ReapplyResult()
    engine = _engine(database_url)
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
                    _reapply_table(conn, table, rows, result)
            _advance_sequences(conn, [t for t in tables.values() if t.name in result.inserted])
    finally:
        engine.dispose()
    return result


def _reapply_table(
    conn: Connection, table: Table, rows: list[dict[str, Any]], result: ReapplyResult
) -> None:
    pk_cols = [c.name for c in table.primary_key.columns]
    if not pk_cols:
        result.skipped_tables[table.name] = "no primary key to tell new rows from old ones"
        return
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
    changed = 0
    for row in rows:
        key = _pk_key(table, row)
        if key is None:
            continue
        seen.add(key)
        if key in existing:
            if any(existing[key].get(c) != row.get(c) for c in columns if c in row):
                changed += 1
            continue
        fresh.append({k: v for k, v in row.items() if k in columns})
    for start in range(0, len(fresh), _BATCH):
        conn.execute(table.insert(), fresh[start : start + _BATCH])
    result.inserted[table.name] = len(fresh)
    if changed:
        result.changed_since_backup[table.name] = changed
    deleted = len(set(existing) - seen)
    if deleted:
        result.deleted_since_backup[table.name] = deleted


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
