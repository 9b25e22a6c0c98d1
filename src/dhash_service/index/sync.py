"""Keep an in-memory index equal to the store's library, across worker processes.

Library rows carry an increasing membership id, and writers make ids visible in id order (see
``store.repository``), so "every row with an id above the last one seen" is exactly what changed.
The loader pages through the whole library once at start-up, then the service polls for rows past
the watermark every few seconds. No I/O happens here: the store is a ``fetch`` callable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dhash_service.index.protocol import HammingIndex, HashArray, IdArray


@dataclass(frozen=True)
class LibraryBatch:
    """Rows past a watermark: image ids, their hashes, and the largest membership id read."""

    image_ids: IdArray
    hashes: HashArray
    last_member_id: int

    @property
    def empty(self) -> bool:
        return int(self.image_ids.size) == 0


Fetch = Callable[[int, int], LibraryBatch]  # (after member id, page size) -> rows in id order


class IndexSync:
    """Owns the watermark; ``load`` once, then ``poll`` (from any thread; calls serialise)."""

    def __init__(self, index: HammingIndex, fetch: Fetch, *, page_size: int = 200_000) -> None:
        self.index = index
        self._fetch = fetch
        self._page_size = page_size
        self._lock = threading.Lock()
        self.watermark = 0
        self.loaded = False

    def load(self) -> int:
        """Read the whole library page by page and index it in one build; returns the count."""
        with self._lock:
            ids: list[IdArray] = []
            hashes: list[HashArray] = []
            watermark = self.watermark
            while True:
                batch = self._fetch(watermark, self._page_size)
                if batch.last_member_id <= watermark:
                    break
                ids.append(batch.image_ids)
                hashes.append(batch.hashes)
                watermark = batch.last_member_id
            if ids:
                self.index.add(np.concatenate(ids), np.concatenate(hashes))
            self.watermark = watermark
            self.loaded = True
            return sum(int(part.size) for part in ids)

    def poll(self) -> int:
        """Index whatever other writers added since the last call; returns the count."""
        with self._lock:
            added = 0
            while True:
                batch = self._fetch(self.watermark, self._page_size)
                if batch.last_member_id <= self.watermark:
                    return added
                if not batch.empty:
                    self.index.add(batch.image_ids, batch.hashes)
                self.watermark = batch.last_member_id
                added += int(batch.image_ids.size)
