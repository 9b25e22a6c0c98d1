"""The index follows the library by membership-id watermark, page by page."""

from __future__ import annotations

import numpy as np

from dhash_service.index import BruteForceIndex, MultiIndexHashing
from dhash_service.index.sync import IndexSync, LibraryBatch


class FakeLibrary:
    """Membership rows (member id, image id, hash or None when the algorithm differs)."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, int, int | None]] = []
        self.calls: list[tuple[int, int]] = []
        self.next_id = 1

    def add(self, image_id: int, value: int | None) -> None:
        self.rows.append((self.next_id, image_id, value))
        self.next_id += 1

    def restore(self, keep: int) -> None:
        """Go back to the first ``keep`` rows, as a restore from an older backup does."""
        self.rows = self.rows[:keep]
        self.next_id = keep + 1

    def fetch(self, after: int, limit: int) -> LibraryBatch:
        self.calls.append((after, limit))
        newest = self.rows[-1][0] if self.rows else 0
        page = [r for r in self.rows if r[0] > after][:limit]
        if not page:
            return LibraryBatch(np.empty(0, np.int64), np.empty(0, np.uint64), after, newest)
        kept = [r for r in page if r[2] is not None]
        return LibraryBatch(
            np.array([r[1] for r in kept], dtype=np.int64),
            np.array([r[2] for r in kept], dtype=np.uint64),
            page[-1][0],
            newest,
        )


def test_load_pages_through_everything_then_poll_sees_only_new_rows() -> None:
    library = FakeLibrary()
    for image_id in range(1, 26):
        library.add(image_id * 10, image_id)
    sync = IndexSync(MultiIndexHashing, library.fetch, page_size=10)
    assert not sync.loaded
    assert sync.load() == 25
    index = sync.index
    assert sync.loaded and sync.watermark == 25 and len(index) == 25
    assert [after for after, _ in library.calls] == [0, 10, 20, 25]

    assert sync.poll() == 0
    library.add(999, 2**64 - 1)
    assert sync.poll() == 1
    assert index.search(2**64 - 1, 0).ids.tolist() == [999]
    assert len(index) == 26


def test_members_without_a_hash_of_this_algorithm_still_advance_the_watermark() -> None:
    library = FakeLibrary()
    library.add(1, None)
    library.add(2, 5)
    library.add(3, None)
    sync = IndexSync(lambda: BruteForceIndex(64), library.fetch, page_size=2)
    assert sync.load() == 1
    assert sync.watermark == 3
    assert sync.index.search(5, 0).ids.tolist() == [2]
    library.add(4, None)
    assert sync.poll() == 0
    assert sync.watermark == 4


def test_a_library_restored_to_an_earlier_state_is_reloaded_not_trusted() -> None:
    library = FakeLibrary()
    for image_id in range(1, 6):
        library.add(image_id, image_id)
    sync = IndexSync(MultiIndexHashing, library.fetch)
    sync.load()
    library.restore(keep=2)
    library.add(77, 2**40)  # a write after the restore reuses membership id 3
    assert sync.poll() == 3
    assert sync.reloads == 1
    assert sorted(sync.index.search(0, 64).ids.tolist()) == [1, 2, 77]
    assert sync.watermark == 3


def test_a_poll_told_the_newest_id_skips_the_fetch_only_when_nothing_is_new() -> None:
    library = FakeLibrary()
    for image_id in range(1, 4):
        library.add(image_id, image_id)
    sync = IndexSync(BruteForceIndex, library.fetch)
    sync.load()
    library.calls.clear()
    assert sync.poll(newest=3) == 0 and library.calls == []  # the ingest's lookup saw 3: done
    library.add(4, 4)
    assert sync.poll(newest=4) == 1 and library.calls  # something new: fetched as usual
    library.restore(keep=2)
    library.calls.clear()
    assert sync.poll(newest=2) == 2  # below the watermark: a restore, rebuilt from the store
    assert sync.reloads == 1 and sync.watermark == 2 and library.calls
