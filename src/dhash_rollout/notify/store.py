"""Delivery state per (event key, channel): the dedupe record and the outbox, in one SQLite file.

A run *claims* a delivery inside ``BEGIN IMMEDIATE`` before sending, so two concurrent runs of
the same command post once: the second sees the claim (or the ``sent`` row) and skips. A failed
delivery stays as ``outboxed`` with its event until ``dhash notify flush`` or a re-run sends
it. A claim left by a killed run goes stale and can be taken over. Rows hold the event, never a
URL or password.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORE_FILE = "notify-state.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    key         TEXT NOT NULL,
    channel     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('sending', 'sent', 'outboxed')),
    event       TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    claim       TEXT,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    PRIMARY KEY (key, channel)
)
"""


@dataclass(frozen=True)
class Claim:
    """The right to send this (key, channel) now; ``token`` proves it when finishing."""

    key: str
    channel: str
    token: str
    prior_attempts: int


@dataclass(frozen=True)
class Duplicate:
    status: str  # 'sent' or 'sending'
    since: float


@dataclass(frozen=True)
class OutboxItem:
    key: str
    channel: str
    event: dict[str, Any]
    attempts: int
    last_error: str | None
    created_at: float
    updated_at: float


class DeliveryStore:
    def __init__(self, path: Path, *, dedupe_seconds: float, stale_claim_seconds: float) -> None:
        self.path = path
        self.dedupe_seconds = dedupe_seconds
        self.stale_claim_seconds = stale_claim_seconds
        self._ready = False

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        if not self._ready:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(self.path, timeout=10.0, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                if not self._ready:
                    db.execute(_SCHEMA)
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            self._ready = True

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` on the store's file, for tables kept beside the deliveries (the
        alert store): one file, one lock, so a claim there and here cannot interleave."""
        return self._transaction()

    def claim(self, key: str, channel: str, event: dict[str, Any]) -> Claim | Duplicate:
        now = time.time()
        token = secrets.token_hex(8)
        with self._transaction() as db:
            row = db.execute(
                "SELECT status, updated_at, attempts FROM deliveries WHERE key = ? AND channel = ?",
                (key, channel),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO deliveries (key, channel, status, event, claim, created_at,"
                    " updated_at) VALUES (?, ?, 'sending', ?, ?, ?, ?)",
                    (key, channel, json.dumps(event), token, now, now),
                )
                return Claim(key, channel, token, 0)
            status, updated_at, attempts = str(row[0]), float(row[1]), int(row[2])
            age = now - updated_at
            if status == "sent" and age < self.dedupe_seconds:
                return Duplicate(status, updated_at)
            if status == "sending" and age < self.stale_claim_seconds:
                return Duplicate(status, updated_at)
            if status == "sent":
                attempts = 0  # an old delivery outside the dedupe window: a new message
            db.execute(
                "UPDATE deliveries SET status = 'sending', claim = ?, updated_at = ?, event = ?,"
                " attempts = ? WHERE key = ? AND channel = ?",
                (token, now, json.dumps(event), attempts, key, channel),
            )
            return Claim(key, channel, token, attempts)

    def finish(self, claim: Claim, *, sent: bool, attempts: int, error: str | None) -> None:
        """Record the outcome of a claimed delivery (ignored if another run took it over)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET status = ?, attempts = ?, last_error = ?, claim = NULL,"
                " updated_at = ? WHERE key = ? AND channel = ? AND claim = ?",
                (
                    "sent" if sent else "outboxed",
                    claim.prior_attempts + attempts,
                    None if sent else error,
                    time.time(),
                    claim.key,
                    claim.channel,
                    claim.token,
                ),
            )

    def outbox(self, limit: int | None = None) -> list[OutboxItem]:
        """Outboxed deliveries, and claims abandoned by a killed run, oldest first."""
        if not self.path.exists():
            return []
        stale = time.time() - self.stale_claim_seconds
        with self._transaction() as db:
            rows = db.execute(
                "SELECT key, channel, event, attempts, last_error, created_at, updated_at"
                " FROM deliveries WHERE status = 'outboxed'"
                " OR (status = 'sending' AND updated_at < ?)"
                " ORDER BY created_at, key, channel LIMIT ?",
                (stale, -1 if limit is None else limit),
            ).fetchall()
        return [
            OutboxItem(str(r[0]), str(r[1]), json.loads(r[2]), int(r[3]), r[4], r[5], r[6])
            for r in rows
        ]

    def purge_sent(self) -> int:
        """Forget sent rows older than the dedupe window; outboxed rows are never dropped."""
        if not self.path.exists():
            return 0
        cutoff = time.time() - self.dedupe_seconds
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM deliveries WHERE status = 'sent' AND updated_at < ?", (cutoff,)
            )
            return int(cursor.rowcount)
