"""Operating-system and database-driver failures as :class:`DhashError`: a clear one-line
message naming the file or database, never a traceback, at every entry point of the backup API.

Integrity failures are raised as :class:`IntegrityError` where they are found; this is only the
net under the rest (an unreadable directory, a full disk, a refused ``CREATE DATABASE``).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

import psycopg

from dhash_service.errors import DhashError
from dhash_service.logs import redact_text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact_text(text.splitlines()[0] if text else type(exc).__name__)


@contextlib.contextmanager
def reported_failures(what: str, *, outcome: str, where: object = None) -> Iterator[None]:
    """Re-raise OS, SQLite and PostgreSQL errors inside as ``DhashError``: ``<what> failed:
    <why> (<file>); <outcome>``, where ``outcome`` says what was (not) changed and ``where``
    names the place when the error itself does not (ENOSPC on a write names no file)."""
    try:
        yield
    except OSError as exc:
        place = exc.filename or where
        where = f" ({place})" if place else ""
        raise DhashError(f"{what} failed: {exc.strerror or exc}{where}; {outcome}") from None
    except sqlite3.Error as exc:
        raise DhashError(f"{what} failed: SQLite: {_first_line(exc)}; {outcome}") from None
    except psycopg.Error as exc:
        raise DhashError(f"{what} failed: PostgreSQL: {_first_line(exc)}; {outcome}") from None
