"""One run at a time per environment and purpose (deploy, backup, restore, rollback).

The lock is a kernel ``flock`` on a small file that also names its holder (pid, host, time).
The kernel drops the lock when the holder dies, so a lock left by a dead process is taken over
without guessing from pids; the stale holder's record is reported so the journal can say so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from dhash_service.errors import Locked


@dataclass(frozen=True)
class LockHolder:
    pid: int
    host: str
    started_at: str
    purpose: str


@dataclass(frozen=True)
class HeldLock:
    path: Path
    holder: LockHolder
    took_over: LockHolder | None  # the record a dead holder left behind, if any


def _read_holder(fd: int) -> LockHolder | None:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode("utf-8")) if raw.strip() else None
        return LockHolder(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError, OSError):
        return None


@contextmanager
def hold_lock(path: Path, purpose: str) -> Iterator[HeldLock]:
    """Hold ``path`` exclusively or raise :class:`Locked` naming the current holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            who = (
                f"pid {holder.pid} on {holder.host} ({holder.purpose}) since {holder.started_at}"
                if holder
                else "another process"
            )
            raise Locked(f"{purpose}: {path} is held by {who}") from None
        stale = _read_holder(fd)
        me = LockHolder(
            pid=os.getpid(),
            host=socket.gethostname(),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            purpose=purpose,
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(asdict(me)).encode("utf-8"), 0)
        os.fsync(fd)
        try:
            yield HeldLock(path=path, holder=me, took_over=stale)
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
