"""One run at a time per environment and purpose (deploy, backup, restore, rollback).

The lock is a kernel ``flock`` on a small file that also names its holder (pid, host, time).
The kernel drops the lock when the holder dies, so a lock left by a dead process is taken over
without guessing from pids; the stale holder's record is reported so the journal can say so.

The lock is reentrant for its holder: a rollback that the deploy holding the lock runs (the
monitor's automatic rollback) passes the :class:`HeldLock` it runs under as ``within`` and takes
the same path again without waiting for itself (``flock`` alone would refuse it, a second
``open`` being a second owner). Reentry is explicit: any other taker, in this process or
another, is refused as before, so two runs of one process still exclude each other.

Looking is not taking: :func:`lock_holder` asks whether a run holds the lock with a *shared*
``flock`` on a read-only descriptor and writes nothing, so ``release status`` and the dry-run
never overwrite a dead holder's record. A taker that meets such a look (it lasts microseconds)
tries again for :data:`LOOK_GRACE_S` before refusing, so a status in one terminal cannot make a
rollback in another exit 3.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
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
    nested: bool = False  # taken again by the process that already held it


@dataclass(eq=False)
class _Owned:
    lock: HeldLock
    depth: int
    pid: int


LOOK_GRACE_S = 0.25  # how long a taker retries a lock that may only be looked at
_RETRY_S = 0.005

_owned: dict[Path, _Owned] = {}
_owned_guard = threading.Lock()


def _read_holder(fd: int) -> LockHolder | None:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode("utf-8")) if raw.strip() else None
        return LockHolder(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError, OSError):
        return None


def _key(path: Path) -> Path:
    return path.resolve()


def _describe(holder: LockHolder | None) -> str:
    if holder is None:
        return "another process"
    return f"pid {holder.pid} on {holder.host} ({holder.purpose}) since {holder.started_at}"


def _take(fd: int) -> bool:
    """Take ``fd``'s lock exclusively, retrying briefly past a look; False: a run holds it."""
    deadline = time.monotonic() + LOOK_GRACE_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_RETRY_S)


def lock_holder(path: Path) -> str | None:
    """Who holds ``path`` right now ("pid ... on ... (deploy) since ..."), None: nobody.

    A look, not a take: a shared lock on a read-only descriptor, released at once, and nothing
    written, so the record a killed holder left stays for the next taker to report.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _describe(_read_holder(fd))
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextmanager
def _reenter(key: Path, within: HeldLock) -> Iterator[HeldLock]:
    """``within`` again, when it is this process's live lock on ``key``."""
    with _owned_guard:
        owned = _owned.get(key)
        live = owned is not None and owned.pid == os.getpid() and owned.lock == within
        if not live or owned is None:
            raise Locked(f"{within.path}: the lock passed as held is not held by this process")
        owned.depth += 1
    try:
        yield replace(within, took_over=None, nested=True)
    finally:
        with _owned_guard:
            owned.depth -= 1


@contextmanager
def hold_lock(path: Path, purpose: str, *, within: HeldLock | None = None) -> Iterator[HeldLock]:
    """Hold ``path`` exclusively or raise :class:`Locked` naming the current holder.

    ``within``: the lock on ``path`` the caller already holds; the body runs under it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    key = _key(path)
    if within is not None:
        with _reenter(key, within) as again:
            yield again
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _take(fd):
            raise Locked(f"{purpose}: {path} is held by {_describe(_read_holder(fd))}")
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
        held = HeldLock(path=path, holder=me, took_over=stale)
        with _owned_guard:
            _owned[key] = _Owned(held, 1, os.getpid())
        try:
            yield held
        finally:
            with _owned_guard:
                _owned.pop(key, None)
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
