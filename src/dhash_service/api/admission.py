"""Fair admission of extractions: two bounded lanes, a per-client cap, and a queue time limit.

Images (whose cost their header bounds) and documents (PDF, video, ZIP: decoded in a child
process, slow by nature) take separate lanes, so four hostile PDFs in flight never hold the slots
small image ingests need. Each lane admits a bounded number at once; a request that cannot get a
slot within ``DHASH_ADMISSION_QUEUE_SECONDS`` is answered ``503`` with ``Retry-After`` instead of
waiting without end, and one client (token, or address without one) may hold at most
``DHASH_HEAVY_EXTRACTIONS_PER_CLIENT`` document slots, in flight or queued. ``/ready`` reports
the lanes, and says not ready while requests are queueing, so a proxy can route around a full
worker.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from dhash_service.errors import Overloaded, Unavailable

RETRY_AFTER_SECONDS = 1


class Admission:
    def __init__(
        self, image_slots: int, document_slots: int, *, per_client: int, queue_seconds: float
    ) -> None:
        self.images = anyio.CapacityLimiter(image_slots)
        self.documents = anyio.CapacityLimiter(document_slots)
        self.per_client = per_client
        self.queue_seconds = queue_seconds
        self._documents_by_client: Counter[str] = Counter()
        self.refused = 0
        self.stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: set[anyio.CancelScope] = set()
        self._running: set[threading.Event] = set()

    def abandon_all(self) -> None:
        """Shutdown's last step before its grace ends (any thread): queued requests get 503 at
        once and running extractions are cancelled, so every accepted request is answered."""
        self.stopping = True
        for cancelled in list(self._running):
            cancelled.set()
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._cancel_waiting)

    def _cancel_waiting(self) -> None:
        for scope in list(self._waiting):
            scope.cancel()

    @asynccontextmanager
    async def admit(self, *, document: bool, client: str) -> AsyncIterator[threading.Event]:
        """Hold one slot of the right lane for the block, or raise ``Overloaded`` (503).

        Yields the extraction's cancellation event (set when the client goes away, or by
        ``abandon_all``)."""
        self._loop = asyncio.get_running_loop()
        if self.stopping:
            raise _stopping()
        if document:
            if self._documents_by_client[client] >= self.per_client:
                self.refused += 1
                raise Overloaded(
                    f"this client already has {self.per_client} document(s) being decoded; "
                    "retry when it is answered",
                    detail={"retry_after_seconds": RETRY_AFTER_SECONDS},
                )
            self._documents_by_client[client] += 1
        try:
            lane = self.documents if document else self.images
            acquired = False
            waiting = anyio.CancelScope(deadline=anyio.current_time() + self.queue_seconds)
            self._waiting.add(waiting)
            try:
                with waiting:
                    await lane.acquire()
                    acquired = True
            finally:
                self._waiting.discard(waiting)
            if not acquired:
                self.refused += 1
                if self.stopping:
                    raise _stopping()
                raise Overloaded(
                    "this worker is saturated; retry shortly",
                    detail={"retry_after_seconds": RETRY_AFTER_SECONDS},
                )
            cancelled = threading.Event()
            self._running.add(cancelled)
            try:
                yield cancelled
            finally:
                self._running.discard(cancelled)
                lane.release()
        finally:
            if document:
                self._documents_by_client[client] -= 1
                if self._documents_by_client[client] <= 0:
                    del self._documents_by_client[client]

    def saturation(self) -> dict[str, str]:
        """One readiness check per lane: ``ok`` or ``saturated (...)`` with what is waiting."""
        checks = {}
        for name, lane in (("images", self.images), ("documents", self.documents)):
            stats = lane.statistics()
            text = f"{stats.borrowed_tokens}/{int(stats.total_tokens)} busy"
            if stats.tasks_waiting:
                checks[f"admission_{name}"] = f"saturated ({text}, {stats.tasks_waiting} queued)"
            else:
                checks[f"admission_{name}"] = "ok"
        return checks


def _stopping() -> Unavailable:
    return Unavailable("this worker is shutting down; retry on another")
