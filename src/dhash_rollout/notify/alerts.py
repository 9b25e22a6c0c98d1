"""Open alerts and what was sent about them, in the notification store's SQLite file.

An *alert* is an escalating notice (its occurrence key, so a re-run of the same run opens the
same alert) until it is acknowledged or resolved. Each thing sent about it — the page of one
level, the acknowledgement, the resolution — is a *notice* row, claimed inside the store's
``BEGIN IMMEDIATE`` before it is sent, so two runners (cron every minute and the monitor's
polls) page each level once. A claim whose runner died goes stale and is taken over; delivery
of a claimed notice goes through the ordinary notifier, so a channel that fails is outboxed and
retried like any notice. The tables are added beside ``deliveries`` (``CREATE ... IF NOT
EXISTS``): a store written by an older version keeps working. Every method takes ``now`` (epoch
seconds) so escalation runs on any clock.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dhash_service.errors import NotFound, Unavailable

from .escalation import paged_level
from .model import Severity
from .store import DeliveryStore

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS alerts (
        id               TEXT PRIMARY KEY,
        key              TEXT NOT NULL UNIQUE,
        env              TEXT NOT NULL,
        severity         TEXT NOT NULL,
        event            TEXT NOT NULL,
        run_id           TEXT,
        opened_at        REAL NOT NULL,
        acked_at         REAL,
        acked_by         TEXT,
        resolved_at      REAL,
        resolved_by      TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS alerts_by_run ON alerts (run_id)",
    """
    CREATE TABLE IF NOT EXISTS alert_notices (
        alert_id    TEXT NOT NULL REFERENCES alerts (id),
        notice      TEXT NOT NULL,
        label       TEXT NOT NULL,
        claim       TEXT,
        claimed_at  REAL NOT NULL,
        done_at     REAL,
        contacts    TEXT NOT NULL DEFAULT '{}',
        PRIMARY KEY (alert_id, notice)
    )
    """,
)
# Columns added after the table was first shipped: (name, type), added to an older store.
_ADDED_COLUMNS = (("acked_via", "TEXT"),)
_ALERT_COLUMNS = (
    "id, key, env, severity, event, run_id, opened_at, acked_at, acked_by, resolved_at,"
    " resolved_by, acked_via"
)
# A closed alert is still looked at this long, so its acknowledgement or resolution is announced.
_ANNOUNCE_WINDOW_SECONDS = 86400.0


class AlertNotFound(NotFound):
    """No alert has this id: a usage error of ``dhash notify ack`` (exit 2)."""

    exit_code = 2


@dataclass(frozen=True)
class Notice:
    """One thing sent (or being sent) about an alert, and to whom."""

    notice: str
    label: str
    claimed_at: float
    done_at: float | None
    outcomes: Mapping[str, str]  # contact → its delivery status (sent, outboxed, not-configured)

    @property
    def contacts(self) -> tuple[str, ...]:
        return tuple(self.outcomes)

    @property
    def level(self) -> int | None:
        return paged_level(self.notice)


@dataclass(frozen=True)
class Alert:
    id: str
    key: str
    env: str
    severity: Severity
    event: dict[str, Any]
    run_id: str | None
    opened_at: float
    acked_at: float | None = None
    acked_by: str | None = None
    resolved_at: float | None = None
    resolved_by: str | None = None
    notices: tuple[Notice, ...] = ()
    acked_via: str | None = None  # how: None for the command line, else e.g. "the L2 ack link"

    @property
    def is_open(self) -> bool:
        return self.acked_at is None and self.resolved_at is None

    @property
    def state(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        return "acknowledged" if self.acked_at is not None else "open"

    def paged_levels(self) -> frozenset[int]:
        return frozenset(n.level for n in self.notices if n.level is not None)


@dataclass(frozen=True)
class NoticeClaim:
    """The right to send ``notice`` for ``alert`` now; ``token`` proves it when finishing."""

    alert: Alert
    notice: str
    label: str
    token: str


# What a runner wants sent for an alert, given the notices already taken: (notice, label) pairs.
Decide = Callable[[Alert, frozenset[str]], Iterable[tuple[str, str]]]


@contextmanager
def store_errors(path: Path) -> Iterator[None]:
    """A store that cannot be opened or read is named, not a traceback (an unwritable log
    directory, a file that is not SQLite)."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        raise Unavailable(
            f"notification store {path} is unusable: {type(exc).__name__}: {exc}"
        ) from exc


class AlertStore:
    def __init__(self, store: DeliveryStore, *, stale_claim_seconds: float) -> None:
        self.store = store
        self.stale_claim_seconds = stale_claim_seconds

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with store_errors(self.store.path), self.store.transaction() as db:
            yield db

    def _ensure(self, db: sqlite3.Connection) -> None:
        for statement in _SCHEMA:
            db.execute(statement)
        have = {str(row[1]) for row in db.execute("PRAGMA table_info(alerts)")}
        for name, kind in _ADDED_COLUMNS:
            if name not in have:  # a store written before this column existed
                db.execute(f"ALTER TABLE alerts ADD COLUMN {name} {kind}")

    # --- opening ------------------------------------------------------------------------------

    def open(
        self,
        *,
        key: str,
        env: str,
        severity: Severity,
        event: dict[str, Any],
        run_id: str | None,
        now: float,
    ) -> Alert:
        """The alert of this occurrence, opened now unless it already exists."""
        with self._transaction() as db:
            self._ensure(db)
            found = self._by(db, "key = ?", (key,))
            if found:
                return found[0]
            while True:
                alert_id = f"A{secrets.token_hex(3).upper()}"
                if not self._by(db, "id = ?", (alert_id,)):
                    break
            db.execute(
                "INSERT INTO alerts (id, key, env, severity, event, run_id, opened_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (alert_id, key, env, severity.name, json.dumps(event), run_id, now),
            )
            return self._by(db, "id = ?", (alert_id,))[0]

    # --- claiming what is due -----------------------------------------------------------------

    def claim(self, decide: Decide, now: float) -> list[NoticeClaim]:
        """Claim every notice ``decide`` wants for the alerts still of interest, in one
        transaction: a notice sent, or claimed by a live runner, is never claimed twice."""
        claims: list[NoticeClaim] = []
        stale = now - self.stale_claim_seconds
        with self._transaction() as db:
            self._ensure(db)
            alerts = self._by(
                db, "resolved_at IS NULL OR resolved_at >= ?", (now - _ANNOUNCE_WINDOW_SECONDS,)
            )
            for alert in alerts:
                taken = {n.notice for n in alert.notices if n.done_at or n.claimed_at >= stale}
                for notice, label in decide(alert, frozenset(taken)):
                    if notice in taken:
                        continue
                    token = secrets.token_hex(8)
                    db.execute(
                        "INSERT INTO alert_notices (alert_id, notice, label, claim, claimed_at)"
                        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (alert_id, notice) DO UPDATE SET"
                        " claim = excluded.claim, claimed_at = excluded.claimed_at,"
                        " label = excluded.label",
                        (alert.id, notice, label, token, now),
                    )
                    claims.append(NoticeClaim(alert, notice, label, token))
        return claims

    def finish(self, claim: NoticeClaim, outcomes: Mapping[str, str], now: float) -> None:
        """Record that the claimed notice went out, and each contact's outcome (sent, or
        outboxed for retry, or not configured)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE alert_notices SET done_at = ?, contacts = ?, claim = NULL"
                " WHERE alert_id = ? AND notice = ? AND claim = ?",
                (now, json.dumps(dict(outcomes)), claim.alert.id, claim.notice, claim.token),
            )

    # --- acknowledging and resolving ----------------------------------------------------------

    def ack(
        self, alert_id: str, by: str, now: float, *, via: str | None = None
    ) -> tuple[Alert, bool]:
        """Acknowledge; returns the alert and whether this call did it (False: already
        acknowledged or resolved, which is not an error for a second on-call person)."""
        with self._transaction() as db:
            self._ensure(db)
            found = self._by(db, "id = ?", (alert_id.strip().upper(),))
            if not found:
                raise AlertNotFound(
                    f"no alert {alert_id!r}; `dhash notify status` lists the open ones"
                )
            alert = found[0]
            if not alert.is_open:
                return alert, False
            db.execute(
                "UPDATE alerts SET acked_at = ?, acked_by = ?, acked_via = ? WHERE id = ?",
                (now, by, via, alert.id),
            )
            return self._by(db, "id = ?", (alert.id,))[0], True

    def resolve(self, ref: str, by: str, now: float) -> list[Alert]:
        """Close the unresolved alerts of ``ref`` (an alert id, an occurrence key or a run id)."""
        with self._transaction() as db:
            self._ensure(db)
            where = "resolved_at IS NULL AND (id = ? OR key = ? OR run_id = ?)"
            found = self._by(db, where, (ref.strip().upper(), ref, ref))
            for alert in found:
                db.execute(
                    "UPDATE alerts SET resolved_at = ?, resolved_by = ? WHERE id = ?",
                    (now, by, alert.id),
                )
            return [self._by(db, "id = ?", (a.id,))[0] for a in found]

    def resolve_kind(self, env: str, kind: str, by: str, now: float) -> list[Alert]:
        """Close the unresolved alerts of ``env`` raised by a notice of ``kind`` (e.g. every
        ``gate`` alert once a later watch finds all gates passing)."""
        with self._transaction() as db:
            self._ensure(db)
            where = "resolved_at IS NULL AND env = ? AND json_extract(event, '$.kind') = ?"
            found = self._by(db, where, (env, kind))
            for alert in found:
                db.execute(
                    "UPDATE alerts SET resolved_at = ?, resolved_by = ? WHERE id = ?",
                    (now, by, alert.id),
                )
            return [self._by(db, "id = ?", (a.id,))[0] for a in found]

    # --- reading ------------------------------------------------------------------------------

    def alerts(self, *, include_resolved: bool = False) -> list[Alert]:
        """Unresolved alerts (open or acknowledged: an acknowledged incident is still one),
        or every alert."""
        if not self.store.path.exists():
            return []
        with self._transaction() as db:
            self._ensure(db)
            if include_resolved:
                return self._by(db, "1 = 1", ())
            return self._by(db, "resolved_at IS NULL", ())

    def get(self, alert_id: str) -> Alert | None:
        with self._transaction() as db:
            self._ensure(db)
            found = self._by(db, "id = ?", (alert_id.strip().upper(),))
        return found[0] if found else None

    def _by(self, db: sqlite3.Connection, where: str, args: tuple[object, ...]) -> list[Alert]:
        rows = db.execute(
            # ``where`` is always one of this module's literals; the values are bound.
            f"SELECT {_ALERT_COLUMNS} FROM alerts WHERE {where} ORDER BY opened_at, id",  # noqa: S608
            args,
        ).fetchall()
        notices: dict[str, list[Notice]] = {}
        for row in rows:
            for r in db.execute(
                "SELECT notice, label, claimed_at, done_at, contacts FROM alert_notices"
                " WHERE alert_id = ? ORDER BY claimed_at, notice",
                (row[0],),
            ):
                notices.setdefault(str(row[0]), []).append(
                    Notice(str(r[0]), str(r[1]), float(r[2]), r[3], json.loads(r[4]))
                )
        return [
            Alert(
                id=str(r[0]),
                key=str(r[1]),
                env=str(r[2]),
                severity=Severity.parse(str(r[3])),
                event=json.loads(r[4]),
                run_id=r[5],
                opened_at=float(r[6]),
                acked_at=r[7],
                acked_by=r[8],
                resolved_at=r[9],
                resolved_by=r[10],
                notices=tuple(notices.get(str(r[0]), ())),
                acked_via=r[11],
            )
            for r in rows
        ]
