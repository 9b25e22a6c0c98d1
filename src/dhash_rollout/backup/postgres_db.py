"""PostgreSQL: ``pg_dump -Fc`` streamed straight into the archive, ``pg_restore`` streamed out
of it into a new database, and an atomic rename swap that keeps the old database as the
pre-restore snapshot.

Row counts and content hashes are computed on the very snapshot ``pg_dump`` reads: we open a
REPEATABLE READ transaction, export its snapshot, hand it to ``pg_dump --snapshot`` and run our
queries in that transaction while the dump streams, so the two use both cores.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, LiteralString

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dhash_rollout.backup.manifest import TableStats
from dhash_service.errors import ConfigError, DhashError, Unavailable
from dhash_service.logs import redact_text

CHUNK = 1024 * 1024
MAX_IDENTIFIER = 63
# Fixed output settings so a row's text (and so its hash) does not depend on the session.
_SESSION_SETTINGS: tuple[LiteralString, ...] = (
    "SET TimeZone TO 'UTC'",
    "SET DateStyle TO 'ISO, YMD'",
    "SET IntervalStyle TO 'postgres'",
    "SET extra_float_digits TO 1",
    "SET bytea_output TO 'hex'",
)
_TABLES_SQL = """
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
ORDER BY 1, 2
"""


@dataclass(frozen=True)
class PgTarget:
    """Where a PostgreSQL database lives, from a SQLAlchemy URL; the password never reaches
    a command line (it goes to the tools through ``PGPASSWORD``)."""

    url: URL

    @classmethod
    def from_url(cls, database_url: str) -> PgTarget:
        try:
            url = make_url(database_url)
        except ArgumentError as exc:
            raise ConfigError(f"invalid database URL: {exc}") from None
        if url.get_backend_name() != "postgresql" or not url.database:
            raise ConfigError(
                f"not a PostgreSQL database URL: {url.render_as_string(hide_password=True)}"
            )
        return cls(url=url)

    @property
    def database(self) -> str:
        assert self.url.database is not None
        return self.url.database

    def with_database(self, name: str) -> PgTarget:
        return PgTarget(url=self.url.set(database=name))

    def conninfo(self, *, password: bool = True) -> str:
        params: dict[str, str | int | None] = {
            "dbname": self.url.database,
            "host": self.url.host or None,
            "port": self.url.port or None,
            "user": self.url.username or None,
        }
        if password and self.url.password:
            params["password"] = self.url.password
        for key, value in self.url.query.items():
            params[key] = value if isinstance(value, str) else value[-1]
        return make_conninfo("", **{k: v for k, v in params.items() if v is not None})

    def tool_env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.url.password:
            env["PGPASSWORD"] = str(self.url.password)
        return env

    def sqlalchemy_url(self) -> str:
        return self.url.render_as_string(hide_password=False)

    def display(self) -> str:
        return self.url.render_as_string(hide_password=True)

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[tuple[object, ...]]:
        try:
            return psycopg.connect(self.conninfo(), autocommit=autocommit, connect_timeout=10)
        except psycopg.OperationalError as exc:
            raise Unavailable(f"cannot connect to {self.display()}: {_clean(exc)}") from None


def _clean(exc: BaseException) -> str:
    return redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))


def tool(name: str) -> str:
    """Path of a PostgreSQL client tool: the newest ``/usr/lib/postgresql/<n>/bin`` first (a
    newer ``pg_dump`` reads older servers), then ``PATH``."""

    def major(path: str) -> int:
        match = re.search(r"/postgresql/(\d+)/bin/", path)
        return int(match.group(1)) if match else -1

    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=major)
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path:
        return on_path
    raise ConfigError(f"{name} not found (install the PostgreSQL client tools)")


def _prepare(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    for statement in _SESSION_SETTINGS:
        conn.execute(statement)


def table_stats(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, TableStats]:
    """Row count and an order-independent content hash per table, in ``conn``'s snapshot."""
    _prepare(conn)
    stats: dict[str, TableStats] = {}
    for schema, table in conn.execute(_TABLES_SQL).fetchall():
        ident = sql.Identifier(str(schema), str(table))
        row = conn.execute(
            sql.SQL(
                "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)::text FROM {} AS t"
            ).format(ident)
        ).fetchone()
        assert row is not None
        stats[f"{schema}.{table}"] = TableStats(rows=int(str(row[0])), content_hash=str(row[1]))
    return stats


def row_counts(conn: psycopg.Connection[tuple[object, ...]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for schema, table in conn.execute(_TABLES_SQL).fetchall():
        ident = sql.Identifier(str(schema), str(table))
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
        assert row is not None
        counts[f"{schema}.{table}"] = int(str(row[0]))
    return counts


def schema_revision(conn: psycopg.Connection[tuple[object, ...]]) -> str | None:
    row = conn.execute("SELECT to_regclass('alembic_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return None
    revisions = sorted(str(r[0]) for r in conn.execute("SELECT version_num FROM alembic_version"))
    return ",".join(revisions) or None


def server_version(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


@dataclass(frozen=True)
class DumpFacts:
    server_version: str
    schema_revision: str | None
    tables: dict[str, TableStats]


def dump(
    target: PgTarget,
    sink: Callable[[bytes], None],
    on_bytes: Callable[[int], None],
) -> DumpFacts:
    """Stream ``pg_dump -Fc`` of ``target`` into ``sink`` and describe the dumped snapshot."""
    conn = target.connect()
    try:
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
        assert row is not None
        snapshot_id = str(row[0])
        facts: dict[str, object] = {}

        def describe() -> None:
            try:
                facts["version"] = server_version(conn)
                facts["revision"] = schema_revision(conn)
                facts["tables"] = table_stats(conn)
            except BaseException as exc:  # reported from the main thread
                facts["error"] = exc

        with tempfile.TemporaryFile() as stderr:
            proc = subprocess.Popen(
                [
                    tool("pg_dump"),
                    "--format=custom",
                    "--no-password",
                    f"--snapshot={snapshot_id}",
                    f"--dbname={target.conninfo(password=False)}",
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=target.tool_env(),
            )
            worker = threading.Thread(target=describe, name="pg-table-stats", daemon=True)
            worker.start()
            try:
                assert proc.stdout is not None
                _pump(proc.stdout, sink, on_bytes)
                code = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                worker.join()
                if proc.stdout is not None:
                    proc.stdout.close()
            if code != 0:
                stderr.seek(0)
                raise DhashError(
                    f"pg_dump of {target.display()} failed: {_tool_error(stderr.read())}"
                )
        if "error" in facts:
            err = facts["error"]
            if isinstance(err, DhashError):
                raise err
            assert isinstance(err, BaseException)
            raise Unavailable(f"reading {target.display()} failed: {_clean(err)}")
        tables = facts["tables"]
        assert isinstance(tables, dict)
        return DumpFacts(
            server_version=str(facts["version"]),
            schema_revision=facts["revision"] if isinstance(facts["revision"], str) else None,
            tables=tables,
        )
    finally:
        with contextlib.suppress(psycopg.Error):
            conn.rollback()
        conn.close()


def _pump(
    stream: IO[bytes], sink: Callable[[bytes], None], on_bytes: Callable[[int], None]
) -> None:
    while chunk := stream.read(CHUNK):
        sink(chunk)
        on_bytes(len(chunk))


def _tool_error(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return redact_text(text[-2000:]) or "no error output"


def estimated_dump_bytes(target: PgTarget) -> int:
    """A rough size of the compressed dump (a third of the table data) for the progress bar."""
    try:
        with target.connect(autocommit=True) as conn:
            row = conn.execute(
                "SELECT coalesce(sum(pg_table_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
                "AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
            ).fetchone()
    except Unavailable:
        return 0
    return int(str(row[0])) // 3 if row else 0


# --- restore -------------------------------------------------------------------------------


def scratch_name(base: str, tag: str) -> str:
    """``<base>_<tag>`` cut to PostgreSQL's 63-byte identifier limit (the tag is kept)."""
    room = MAX_IDENTIFIER - len(tag) - 1
    return f"{base.encode('utf-8')[:room].decode('utf-8', 'ignore')}_{tag}"


def database_exists(admin: psycopg.Connection[tuple[object, ...]], name: str) -> bool:
    return (
        admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        is not None
    )


def create_database_like(
    admin: psycopg.Connection[tuple[object, ...]], name: str, like: str | None
) -> None:
    """A new empty database with the encoding and locale of ``like`` when that exists."""
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
    if like is not None:
        row = admin.execute(
            "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
            "WHERE datname = %s",
            (like,),
        ).fetchone()
        if row is not None:
            statement = sql.SQL(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}"
            ).format(
                sql.Identifier(name), sql.Literal(row[0]), sql.Literal(row[1]), sql.Literal(row[2])
            )
    admin.execute(statement)


def drop_database(admin: psycopg.Connection[tuple[object, ...]], name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextlib.contextmanager
def admin_connection(target: PgTarget) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the server's ``postgres`` database (CREATE/DROP DATABASE)."""
    conn = target.with_database("postgres").connect(autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


def load(target: PgTarget, chunks: Iterable[bytes]) -> None:
    """``pg_restore`` a custom-format dump fed through stdin into the (empty) ``target``."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [
                tool("pg_restore"),
                "--no-password",
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                f"--dbname={target.conninfo(password=False)}",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=target.tool_env(),
        )
        assert proc.stdin is not None
        try:
            try:
                for chunk in chunks:
                    proc.stdin.write(chunk)
            except BrokenPipeError:
                pass  # pg_restore stopped early; its exit code and stderr say why
            finally:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if code != 0:
            stderr.seek(0)
            raise DhashError(
                f"pg_restore into {target.display()} failed: {_tool_error(stderr.read())}"
            )


def swap(
    admin: psycopg.Connection[tuple[object, ...]], live: str, incoming: str, keep_as: str
) -> bool:
    """Rename ``live`` to ``keep_as`` and ``incoming`` to ``live`` in one transaction.

    Other sessions on ``live`` are terminated first (PostgreSQL waits a few seconds for them
    to go); returns whether a live database existed. Either both renames happen or neither.
    """
    existed = database_exists(admin, live)
    last: Exception | None = None
    for _attempt in range(5):
        try:
            with admin.transaction():
                if existed:
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = %s AND pid <> pg_backend_pid()",
                        (live,),
                    )
                    admin.execute(
                        sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                            sql.Identifier(live), sql.Identifier(keep_as)
                        )
                    )
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(incoming), sql.Identifier(live)
                    )
                )
            return existed
        except psycopg.errors.ObjectInUse as exc:  # a client reconnected in between
            last = exc
    raise Unavailable(f"cannot swap in the restored database: {_clean(last or Exception())}")


def leftover_databases(admin: psycopg.Connection[tuple[object, ...]], live: str) -> list[str]:
    """Databases a killed restore of ``live`` left behind (``<live>_rst_<timestamp>``)."""
    prefix = scratch_name(live, "rst_00000000_000000")[: -len("rst_00000000_000000")]
    rows = admin.execute("SELECT datname FROM pg_database").fetchall()
    pattern = re.compile(re.escape(prefix) + r"rst_\d{8}_\d{6}$")
    return [str(r[0]) for r in rows if pattern.match(str(r[0]))]


def stats_of(target: PgTarget, *, content: bool) -> dict[str, TableStats]:
    with target.connect() as conn:
        if content:
            return table_stats(conn)
        return {name: TableStats(rows=n, content_hash="") for name, n in row_counts(conn).items()}


def revision_of(target: PgTarget) -> str | None:
    with target.connect() as conn:
        return schema_revision(conn)


def dump_chunks_from(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk
