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

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from dhash_service.errors import Overloaded

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

    @asynccontextmanager
    async def admit(self, *, document: bool, client: str) -> AsyncIterator[None]:
        """Hold one slot of the right lane for the block, or raise ``Overloaded`` (503)."""
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
            with anyio.move_on_after(self.queue_seconds) as waited:
                await lane.acquire()
            if waited.cancelled_caught:
                self.refused += 1
                raise Overloaded(
                    "this worker is saturated; retry shortly",
                    detail={"retry_after_seconds": RETRY_AFTER_SECONDS},
                )
            try:
                yield
            finally:
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
