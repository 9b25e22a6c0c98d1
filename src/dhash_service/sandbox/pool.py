"""The worker's side of decoder isolation: a small pool of child processes and their limits.

``DecoderPool.digest`` sends one input to an idle child (started with
``python -m dhash_service.sandbox.child``) and waits for its reply while watching the wall clock
and the request's cancellation. A child that runs past its wall time, loses its client, or dies
(the kernel's SIGXCPU past its CPU limit, PDFium's abort when its address space is exhausted) is
killed and replaced; the input gets a typed 4xx (``TimeBudgetExceeded``,
``ResourceLimitExceeded``, ``ClientDisconnected``), never a 5xx. A child whose resident memory
grew past ``RECYCLE_RSS_BYTES`` or that served ``RECYCLE_AFTER_JOBS`` inputs is replaced too, so
the memory a large document needed goes back to the system.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

from dhash_service.digest import DigestResult
from dhash_service.errors import (
    ClientDisconnected,
    Overloaded,
    ResourceLimitExceeded,
    TimeBudgetExceeded,
    Unavailable,
)
from dhash_service.extraction import Limits
from dhash_service.extraction.limits import RequestBudget
from dhash_service.logs import get_logger
from dhash_service.memory import resident_bytes
from dhash_service.sandbox import wire

log = get_logger(__name__)

# Input kinds decoded in a child: their cost cannot be bounded from a header (PDF content
# streams, video codecs, archives that may hold either).
ISOLATED_KINDS = frozenset({"pdf", "video", "zip"})
START_TIMEOUT_SECONDS = 30.0
POLL_SECONDS = 0.05
RECYCLE_AFTER_JOBS = 200
RECYCLE_RSS_BYTES = 512 * 1024 * 1024
# The child's own cooperative budget ends this much before the worker's hard kill, so a document
# that is merely slow gets its orderly ``time_budget_exceeded`` from the child (which survives).
KILL_GRACE_SECONDS = 1.0


def isolated_kind(kind: str | None) -> bool:
    return kind in ISOLATED_KINDS


@dataclass(frozen=True)
class ChildLimits:
    memory_bytes: int
    cpu_seconds: float


class _Child:
    """One decoder process and its pipes; used by one thread at a time."""

    def __init__(self, memory_bytes: int) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dhash_service.sandbox.child", str(memory_bytes)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
        )
        self.jobs = 0
        assert self.process.stdin is not None and self.process.stdout is not None
        self._requests: IO[bytes] = self.process.stdin
        self._replies: IO[bytes] = self.process.stdout
        if not self._wait_readable(time.monotonic() + START_TIMEOUT_SECONDS, None):
            self.kill()
            raise OSError("a decoder child did not start")
        try:
            wire.read_frame(self._replies)  # {"ready": true}
        except wire.ChildGone:
            self.kill()
            raise OSError("a decoder child died while starting") from None

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_readable(self, deadline: float, request: RequestBudget | None) -> bool:
        fd = self._replies.fileno()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if request is not None and request.cancelled.is_set():
                raise ClientDisconnected("the client disconnected; the request was abandoned")
            readable, _, _ = select.select([fd], [], [], min(POLL_SECONDS, left))
            if readable:
                return True

    def run(
        self, header: bytes, data: bytes, wall_seconds: float, request: RequestBudget | None
    ) -> bytes | None:
        """The reply frame, or None when the wall time ran out (the caller kills the child)."""
        self.jobs += 1
        deadline = time.monotonic() + wall_seconds
        wire.write_frame(self._requests, header)
        wire.write_frame(self._requests, data)
        self._requests.flush()
        if not self._wait_readable(deadline, request):
            return None
        return wire.read_frame(self._replies)

    def rss_bytes(self) -> int:
        return resident_bytes(self.pid)

    def kill(self) -> int | None:
        """Kill (if alive) and reap; the exit status (negative: the signal that ended it)."""
        if self.process.poll() is None:
            self.process.kill()
        try:
            code = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        for pipe in (self._requests, self._replies):
            with contextlib.suppress(OSError):
                pipe.close()
        return code


class DecoderPool:
    """At most ``size`` children decoding at once; callers beyond wait up to ``queue_seconds``.

    Thread-safe: the API calls ``digest`` from its thread pool.
    """

    def __init__(
        self, size: int, limits: ChildLimits, *, queue_seconds: float, prestart: bool = True
    ) -> None:
        self.size = size
        self.limits = limits
        self.queue_seconds = queue_seconds
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._started = threading.Condition(self._lock)  # a background start finished
        self._starting = 0
        self._idle: list[_Child] = []
        self._busy = 0
        self._waiting = 0
        self.killed = 0
        self._closed = False
        if prestart:
            self._replenish()

    # --- state, for /ready and the metrics ----------------------------------------------------

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def waiting(self) -> int:
        return self._waiting

    def child_pids(self) -> list[int]:
        with self._lock:
            return [child.pid for child in self._idle]

    # --- work -----------------------------------------------------------------------------------

    def digest(
        self,
        data: bytes,
        *,
        filename: str | None,
        algorithm: str,
        limits: Limits,
        request: RequestBudget,
    ) -> DigestResult:
        """Digest ``data`` in a child within ``request``'s remaining time (module doc)."""
        with self._lock:
            self._waiting += 1
        try:
            admitted = self._slots.acquire(
                timeout=max(0.0, min(self.queue_seconds, request.remaining))
            )
        finally:
            with self._lock:
                self._waiting -= 1
        if not admitted:
            raise Overloaded(
                "every document decoder of this worker is busy; retry shortly",
                detail={"retry_after_seconds": 1},
            )
        try:
            with self._lock:
                self._busy += 1
            return self._digest_in_child(data, filename, algorithm, limits, request)
        finally:
            with self._lock:
                self._busy -= 1
            self._slots.release()

    def _digest_in_child(
        self,
        data: bytes,
        filename: str | None,
        algorithm: str,
        limits: Limits,
        request: RequestBudget,
    ) -> DigestResult:
        request.check()
        try:
            child = self._take()
        except OSError as exc:  # our problem, not the input's: a 503, and the log says why
            log.error("decoder.unavailable", error=str(exc))
            raise Unavailable("document decoding is unavailable; retry shortly") from None
        wall = max(request.remaining, 0.0)
        header = wire.request_header(
            algorithm=algorithm,
            filename=filename,
            limits=limits,
            cpu_seconds=min(self.limits.cpu_seconds, wall + KILL_GRACE_SECONDS),
            request_seconds=max(wall - KILL_GRACE_SECONDS, 0.0),
        )
        try:
            reply = child.run(header, data, wall, request)
        except (wire.ChildGone, BrokenPipeError, ConnectionResetError):
            raise self._died(child, wall) from None
        except ClientDisconnected:
            self._discard(child, "client_disconnected")
            raise
        if reply is None:
            self._discard(child, "wall_time")
            raise TimeBudgetExceeded(
                f"decoding took longer than the request's {request.seconds:g} s time budget",
                detail={"request_budget_seconds": request.seconds},
            )
        try:
            result = wire.reply_from_json(reply)
        except ResourceLimitExceeded:
            self._discard(child, "memory_error")  # the child exits after a MemoryError
            raise
        except Exception:
            self._give_back(child)
            raise
        self._give_back(child)
        return result

    def _died(self, child: _Child, wall: float) -> ResourceLimitExceeded:
        code = child.kill()
        self._count_kill()
        cause = "its CPU limit" if code == -signal.SIGXCPU else "its memory limit (or crashed)"
        log.warning("decoder.died", pid=child.pid, exitcode=code, cause=cause)
        return ResourceLimitExceeded(
            f"decoding the input exceeded {cause} and was stopped",
            detail={
                "memory_limit_bytes": self.limits.memory_bytes,
                "cpu_limit_seconds": round(min(self.limits.cpu_seconds, wall), 3),
            },
        )

    def _discard(self, child: _Child, reason: str) -> None:
        code = child.kill()
        self._count_kill()
        log.warning("decoder.killed", pid=child.pid, reason=reason, exitcode=code)

    def _count_kill(self) -> None:
        with self._lock:
            self.killed += 1
        self._replenish()

    def _take(self) -> _Child:
        """An idle child; one being started in the background is waited for rather than a
        second one started beside it (two interpreters importing at once slow both)."""
        with self._lock:
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while not self._idle and self._starting and time.monotonic() < deadline:
                self._started.wait(timeout=0.1)
            while self._idle:
                child = self._idle.pop()
                if child.process.poll() is None:
                    return child
                child.kill()
        return _Child(self.limits.memory_bytes)

    def _give_back(self, child: _Child) -> None:
        if child.jobs >= RECYCLE_AFTER_JOBS or child.rss_bytes() > RECYCLE_RSS_BYTES:
            child.kill()  # memory a large input needed goes back to the system
            self._replenish()
            return
        with self._lock:
            if not self._closed and len(self._idle) < self.size:
                self._idle.append(child)
                return
        child.kill()

    def _replenish(self) -> None:
        """Start one child in the background, so the next document does not wait for it."""

        def start() -> None:
            with self._lock:
                if self._closed or len(self._idle) + self._starting >= self.size:
                    return
                self._starting += 1
            child: _Child | None = None
            try:
                child = _Child(self.limits.memory_bytes)
            except OSError as exc:
                log.warning("decoder.start_failed", error=str(exc))
            finally:
                with self._lock:
                    self._starting -= 1
                    if child is not None and not self._closed and len(self._idle) < self.size:
                        self._idle.append(child)
                        child = None
                    self._started.notify_all()
            if child is not None:
                child.kill()

        threading.Thread(target=start, name="dhash-decoder-start", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for child in idle:
            child.kill()
