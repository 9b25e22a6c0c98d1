"""One read-or-write statement sent straight through a pooled driver connection, in autocommit,
typed and wrapped by SQLAlchemy: the ingest path's duplicate lookup and its one-statement write.

Why: an ingest runs these two statements per upload, and SQLAlchemy's per-execution layers
(execution options, setting and resetting the isolation level for autocommit, the execution
context, the result proxy) cost about as much CPU as the driver's own work for each (bench/
RESULTS.md, session 6). What is kept from SQLAlchemy, so nothing drifts from the other paths:

* the SQL, compiled once from the same Core statement (``one_statement``, the lookup);
* every parameter's bind processor, taken from that compilation (the ``UtcDateTime``
  TypeDecorator, JSON), so the driver gets exactly what SQLAlchemy would send;
* the pool and its checkout events (the ping of a connection idle for a while);
* the errors: a driver error is raised as SQLAlchemy's wrapper (``IntegrityError``,
  ``OperationalError``, ...), and one that means a lost connection invalidates it, as SQLAlchemy
  does, so the callers' handling (duplicates, 503) is unchanged.

PostgreSQL (psycopg 3) only; SQLite keeps the ordinary path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc


class DirectStatement:
    """A statement compiled once for ``dialect``, run with :meth:`first_row`."""

    __slots__ = ("_compiled", "_processors", "sql")

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self._compiled = compiled
        self.sql = compiled.string
        binds = getattr(compiled, "bind_names", {})
        processors: dict[str, Callable[[Any], Any]] = {}
        for bind, name in binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors[name] = process
        self._processors = processors

    def parameters(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The driver's parameters, as SQLAlchemy makes them: every bound name present (a
        missing one raises SQLAlchemy's error), each through its type's bind processor."""
        values = dict(self._compiled.construct_params(dict(params)) or {})
        for name, process in self._processors.items():
            values[name] = process(values[name])
        return values

    def first_row(self, engine: sa.Engine, params: Mapping[str, Any]) -> dict[str, Any]:
        """Run in autocommit (one statement is atomic) and return its one row by column name."""
        values = self.parameters(params)
        dbapi_error = engine.dialect.loaded_dbapi.Error
        try:
            # Unlike ``engine.connect()``, ``raw_connection()`` lets a failed connect (a server
            # down or shutting down) out as the driver's own error: wrap it the same way.
            connection = engine.raw_connection()
        except dbapi_error as error:
            raise sa_exc.DBAPIError.instance(
                None, None, error, dbapi_error, connection_invalidated=False, dialect=engine.dialect
            ) from error
        try:
            driver: Any = connection.driver_connection
            try:
                driver.autocommit = True
                try:
                    with driver.cursor() as cursor:
                        cursor.execute(self.sql, values)
                        row = cursor.fetchone()
                        names = [column.name for column in cursor.description or ()]
                finally:
                    if not driver.closed:  # back to the pool as it came: not in autocommit
                        driver.autocommit = False
            except dbapi_error as error:
                lost = engine.dialect.is_disconnect(error, connection.dbapi_connection, None)
                if lost:
                    connection.invalidate(error)
                raise sa_exc.DBAPIError.instance(
                    self.sql,
                    values,
                    error,
                    dbapi_error,
                    connection_invalidated=lost,
                    dialect=engine.dialect,
                ) from error
        finally:
            connection.close()  # back to the pool (or away, if invalidated)
        if row is None:
            raise sa_exc.NoResultFound("the statement returned no row")
        return dict(zip(names, row, strict=True))
