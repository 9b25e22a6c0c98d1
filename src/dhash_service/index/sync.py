"""Keep an in-memory index equal to the store's library, across worker processes.

Library rows carry an increasing membership id, and writers make ids visible in id order (see
``store.repository``), so "every row with an id above the last one seen" is exactly what changed.
The loader pages through the whole library once at start-up, then the service polls for rows past
the watermark every few seconds. If the library's largest id ever drops below the watermark, the
database was restored to an earlier state: the index is rebuilt from scratch rather than trusted.
No I/O happens here: the store is a ``fetch`` callable.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dhash_service.index.protocol import HammingIndex, HashArray, IdArray


@dataclass(frozen=True)
class LibraryBatch:
    """Rows past a watermark: image ids, their hashes, the largest membership id read, and the
    largest membership id that exists (to notice a restore)."""

    image_ids: IdArray
    hashes: HashArray
    last_member_id: int
    max_member_id: int

    @property
    def empty(self) -> bool:
        return int(self.image_ids.size) == 0


Fetch = Callable[[int, int], LibraryBatch]  # (after member id, page size) -> rows in id order


class IndexSync:
    """Owns the index and its watermark; ``load`` once, then ``poll`` (calls serialise)."""

    def __init__(
        self, new_index: Callable[[], HammingIndex], fetch: Fetch, *, page_size: int = 200_000
    ) -> None:
        self._new_index = new_index
        self.index = new_index()
        self._fetch = fetch
        self._page_size = page_size
        self._lock = threading.Lock()
        self.watermark = 0
        self.loaded = False
        self.reloads = 0

    def load(self) -> int:
        """Read the whole library page by page and index it in one build; returns the count."""
        with self._lock:
            return self._load()

    def _load(self) -> int:
        ids: list[IdArray] = []
        hashes: list[HashArray] = []
        watermark = 0
        while True:
            batch = self._fetch(watermark, self._page_size)
            if batch.last_member_id <= watermark:
                break
            ids.append(batch.image_ids)
            hashes.append(batch.hashes)
            watermark = batch.last_member_id
        index = self._new_index()
        if ids:
            index.add(np.concatenate(ids), np.concatenate(hashes))
        self.index, self.watermark, self.loaded = index, watermark, True  # searches switch here
        return sum(int(part.size) for part in ids)

    def poll(self, newest: int | None = None) -> int:
        """Index whatever other writers added since the last call; returns the count.

        ``newest``, the largest membership id the caller has just read (the ingest reads it with
        its duplicate check), saves the fetch when it equals the watermark: nothing is new."""
        with self._lock:
            if newest is not None and newest == self.watermark:
                return 0
            added = 0
            while True:
                batch = self._fetch(self.watermark, self._page_size)
                if batch.max_member_id < self.watermark:  # restored to an earlier state
                    self.reloads += 1
                    return self._load()
                if batch.last_member_id <= self.watermark:
                    return added
                if not batch.empty:
                    self.index.add(batch.image_ids, batch.hashes)
                self.watermark = batch.last_member_id
                added += int(batch.image_ids.size)
