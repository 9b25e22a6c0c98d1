"""Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012) for 64-bit hashes: exact and fast.

Each hash is cut into ``M = 4`` disjoint 16-bit chunks. If two hashes differ in at most ``r``
bits, then, writing ``r = M * q + a`` with ``0 <= a < M``, at least one of the first ``a + 1``
chunks differs in at most ``q`` bits or one of the other chunks differs in at most ``q - 1`` bits
(otherwise the total would be at least ``(a + 1)(q + 1) + (M - a - 1) q = r + 1``). So probing,
per chunk, every 16-bit key within that chunk radius finds every true neighbour; candidates are
then checked with the full distance, which makes the result exact.

Layout (CSR, built with vectorised numpy, no Python loop over hashes): the rows are the hashes
stably sorted by chunk 0, so a chunk-0 bucket is a contiguous range of the hash array; for
chunks 1..3 a ``uint32`` permutation lists the rows sorted by that chunk, and one offsets array
says where each of the ``4 * 65536`` buckets starts. That is 8 (hash) + 3 * 4 (permutations)
+ 4 (id, ``uint32`` when every id fits) = 24 bytes per hash, plus 1 MB of offsets. Chunk 0
always carries the largest probe radius, so most candidates (at radius 4, 17 of 20 probed
buckets) are read as contiguous memory; the other chunks' candidates cost one random read each.

New hashes go to a small brute-force tail; when the tail outgrows ``max(16384, n / 256)`` the
static part is rebuilt off the search path and swapped in. Searches read one immutable snapshot,
so they need no lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dhash_service.index.protocol import (
    HashArray,
    IdArray,
    Neighbors,
    as_hash_matrix,
    order_neighbors,
)

BITS = 64
CHUNKS = 4
CHUNK_BITS = 16
BUCKETS = 1 << CHUNK_BITS
_CHUNK_MASK = np.uint64(BUCKETS - 1)
_SHIFTS = np.arange(CHUNKS, dtype=np.uint64) * np.uint64(CHUNK_BITS)
_MIN_TAIL = 16_384
_TAIL_FRACTION = 256
# Past this many candidates per stored hash a plain scan of one chunk's copy is cheaper.
_SCAN_SHARE = 0.35
# Up to this many hits, post-processing in plain Python beats a dozen numpy calls.
_FEW = 256
_SHIFT_INTS = tuple(range(0, BITS, CHUNK_BITS))
# Plans with at most this many probes (radius 0..7) take the plain-Python bucket lookup.
_FEW_PROBES = 96
_UINT32_MAX = 2**32 - 1
_EMPTY_ROWS: NDArray[np.uint32] = np.empty(0, np.uint32)


@lru_cache(maxsize=CHUNK_BITS + 1)
def _keys_within(radius: int) -> NDArray[np.int64]:
    """All 16-bit XOR masks with at most ``radius`` bits set."""
    counts = np.bitwise_count(np.arange(BUCKETS, dtype=np.uint32))
    return np.flatnonzero(counts <= radius).astype(np.int64)


@dataclass(frozen=True)
class ProbePlan:
    """Per probe: which chunk, which XOR mask, and the chunk's first bucket."""

    chunk: NDArray[np.int64]
    masks: NDArray[np.int64]
    bases: NDArray[np.int64]
    pairs: tuple[tuple[int, int], ...]  # (chunk, mask) as Python ints, for small plans
    primary: int  # probes of chunk 0 (they come first)

    @property
    def size(self) -> int:
        return int(self.masks.size)


@lru_cache(maxsize=4 * BITS)
def probe_plan(radius: int) -> ProbePlan:
    """The probes for a radius: the pigeonhole split in the module docstring."""
    per_chunk, extra = divmod(radius, CHUNKS)
    chunk_ids: list[NDArray[np.int64]] = []
    masks: list[NDArray[np.int64]] = []
    for chunk in range(CHUNKS):
        chunk_radius = per_chunk if chunk <= extra else per_chunk - 1
        if chunk_radius < 0:
            continue
        keys = _keys_within(min(chunk_radius, CHUNK_BITS))
        chunk_ids.append(np.full(keys.size, chunk, np.int64))
        masks.append(keys)
    chunk_of = np.concatenate(chunk_ids)
    all_masks = np.concatenate(masks)
    pairs = tuple(zip(chunk_of.tolist(), all_masks.tolist(), strict=True))
    return ProbePlan(
        chunk_of,
        all_masks,
        chunk_of * BUCKETS,
        pairs if len(pairs) <= 4096 else (),
        int(np.count_nonzero(chunk_of == 0)),
    )


def chunk_values(hashes: NDArray[np.uint64]) -> NDArray[np.uint16]:
    """``(CHUNKS, n)`` matrix of 16-bit chunk values, chunk 0 the least significant."""
    return ((hashes[None, :] >> _SHIFTS[:, None]) & _CHUNK_MASK).astype(np.uint16)


@dataclass(frozen=True)
class _Table:
    """The static part; immutable once built.

    Rows are the stored hashes ordered by chunk 0, so chunk 0's buckets are plain ranges of
    ``hashes`` and need no permutation; chunks 1..3 each keep a permutation (rows ordered by that
    chunk's value). ``offsets`` holds where each of the ``CHUNKS * BUCKETS`` buckets starts: chunk
    ``c``'s buckets span slots ``[c * n, (c + 1) * n)``; slot ``s < n`` is row ``s``, slot
    ``s >= n`` is row ``perms[s - n]``.
    """

    ids: NDArray[np.integer[Any]]  # row -> caller id (uint32 when every id fits)
    hashes: NDArray[np.uint64]  # row -> hash
    perms: NDArray[np.unsignedinteger[Any]]  # (CHUNKS - 1) * n rows, by chunk 1, then 2, then 3
    offsets: NDArray[np.unsignedinteger[Any]]  # CHUNKS * BUCKETS + 1 slots
    offset_view: memoryview  # the same memory; one item costs less than numpy indexing

    @property
    def size(self) -> int:
        return int(self.hashes.size)

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.hashes.nbytes + self.perms.nbytes + self.offsets.nbytes

    @classmethod
    def build(cls, ids: IdArray, hashes: NDArray[np.uint64]) -> _Table:
        n = int(hashes.size)
        fits = bool(ids.size) and int(ids.min()) >= 0 and int(ids.max()) <= _UINT32_MAX
        row_type: type[np.unsignedinteger[Any]] = np.uint32 if n <= _UINT32_MAX else np.uint64
        slot_type: type[np.unsignedinteger[Any]] = (
            np.uint32 if CHUNKS * n <= _UINT32_MAX else np.uint64
        )
        id_type: type[np.integer[Any]] = np.uint32 if fits else np.int64
        # Stable argsort of 16-bit keys is a radix sort; rows take chunk 0's order.
        order = np.argsort((hashes & _CHUNK_MASK).astype(np.uint16), kind="stable")
        row_hashes = hashes[order]
        row_ids = ids[order].astype(id_type)
        del order
        counts = np.empty(CHUNKS * BUCKETS, dtype=np.int64)
        perms: NDArray[np.unsignedinteger[Any]] = np.empty((CHUNKS - 1) * n, dtype=row_type)
        for chunk in range(CHUNKS):  # 4 iterations, each vectorised over all hashes
            keys = ((row_hashes >> _SHIFTS[chunk]) & _CHUNK_MASK).astype(np.uint16)
            counts[chunk * BUCKETS : (chunk + 1) * BUCKETS] = np.bincount(keys, minlength=BUCKETS)
            if chunk:
                perms[(chunk - 1) * n : chunk * n] = np.argsort(keys, kind="stable")
        offsets: NDArray[np.unsignedinteger[Any]] = np.zeros(CHUNKS * BUCKETS + 1, dtype=slot_type)
        np.cumsum(counts, out=offsets[1:], dtype=slot_type)
        return cls(row_ids, row_hashes, perms, offsets, offsets.data)

    def search(self, value: int, radius: int) -> Hits:
        """Rows within ``radius`` with distances and hashes (unsorted, each row once).

        At small radii the fixed cost of each numpy call, not the data, dominates a query, so
        a plan with few probes looks its buckets up in plain Python and makes few gathers.
        """
        plan = probe_plan(radius)
        if plan.size <= _FEW_PROBES:
            return self._search_few_probes(value, radius, plan)
        query_chunks = np.array([(value >> shift) & 0xFFFF for shift in _SHIFT_INTS], np.int64)
        keys = (query_chunks[plan.chunk] ^ plan.masks) + plan.bases
        starts = self.offsets[keys].astype(np.intp)
        lengths = self.offsets[keys + 1].astype(np.intp) - starts
        ends = lengths.cumsum()
        total = int(ends[-1])
        if total > _SCAN_SHARE * self.size:
            return self._scan(value, radius)
        # CSR gather: the concatenation of every probed bucket's slots, without a Python loop.
        # Chunk 0's probes come first and their slots are rows; the rest index ``perms``.
        slots = np.repeat(starts - ends + lengths, lengths) + np.arange(total)
        split = int(ends[plan.primary - 1]) if plan.primary else 0
        value64 = np.uint64(value)
        primary_rows = slots[:split]
        other_rows = self.perms[slots[split:] - self.size]
        near_primary = np.bitwise_count(self.hashes[primary_rows] ^ value64)
        near_other = np.bitwise_count(self.hashes[other_rows] ^ value64)
        hit_primary = np.flatnonzero(near_primary <= radius)
        hit_other = np.flatnonzero(near_other <= radius)
        return self._collect(
            np.concatenate([primary_rows[hit_primary], other_rows[hit_other]]),
            np.concatenate([near_primary[hit_primary], near_other[hit_other]]),
        )

    def _search_few_probes(self, value: int, radius: int, plan: ProbePlan) -> Hits:
        query_chunks = [(value >> shift) & 0xFFFF for shift in _SHIFT_INTS]
        offsets = self.offset_view
        n = self.size
        primary: list[tuple[int, int]] = []  # chunk 0's buckets: ranges of rows
        others: list[NDArray[np.unsignedinteger[Any]]] = []  # other chunks': slices of perms
        for chunk, mask in plan.pairs:
            key = (query_chunks[chunk] ^ mask) | (chunk << CHUNK_BITS)
            start, end = offsets[key], offsets[key + 1]
            if end > start:
                if chunk:
                    others.append(self.perms[start - n : end - n])
                else:
                    primary.append((start, end))
        hashes = self.hashes
        other_rows = np.concatenate(others) if others else _EMPTY_ROWS
        candidates = np.concatenate([*(hashes[a:b] for a, b in primary), hashes[other_rows]])
        distances = np.bitwise_count(candidates ^ np.uint64(value))
        hit = np.flatnonzero(distances <= radius).tolist()
        if not hit:
            return Hits.empty()
        rows: list[int] = []
        span, span_start, span_end = -1, 0, 0
        primary_total = sum(b - a for a, b in primary)
        for index in hit:  # ascending: walk chunk 0's ranges alongside, then the permuted rows
            if index >= primary_total:
                rows.append(int(other_rows[index - primary_total]))
                continue
            while index >= span_end:
                span += 1
                span_start = span_end
                span_end += primary[span][1] - primary[span][0]
            rows.append(primary[span][0] + index - span_start)
        return self._collect(np.array(rows, dtype=np.intp), distances[hit])

    def _scan(self, value: int, radius: int) -> Hits:
        distances = np.bitwise_count(self.hashes ^ np.uint64(value))
        hit = np.flatnonzero(distances <= radius)
        return self._collect(hit, distances[hit])

    def _collect(self, rows: NDArray[np.intp], distances: NDArray[np.uint8]) -> Hits:
        """Rows to ids; a row near in several chunks was found once per chunk."""
        if rows.size > _FEW:
            unique, first = np.unique(rows, return_index=True)
            return Hits(
                self.ids[unique].astype(np.int64),
                distances[first].astype(np.int64),
                self.hashes[unique],
            )
        seen: dict[int, int] = {}
        for row, distance in zip(rows.tolist(), distances.tolist(), strict=True):
            seen.setdefault(row, distance)
        if not seen:
            return Hits.empty()
        kept = list(seen)
        return Hits.of(self.ids[kept].tolist(), list(seen.values()), self.hashes[kept].tolist())

    def rows(self) -> tuple[IdArray, NDArray[np.uint64]]:
        """Ids and hashes of every row, for a rebuild."""
        return self.ids.astype(np.int64), self.hashes


@dataclass(frozen=True)
class Hits:
    """Unsorted search hits, as arrays (many) or as lists (few: cheaper than numpy calls)."""

    ids: IdArray | list[int]
    distances: NDArray[np.int64] | list[int]
    hashes: NDArray[np.uint64] | list[int]

    @classmethod
    def empty(cls) -> Hits:
        return cls([], [], [])

    @classmethod
    def of(cls, ids: list[int], distances: list[int], hashes: list[int]) -> Hits:
        return cls(ids, distances, hashes)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class _Snapshot:
    table: _Table | None
    tail_ids: IdArray
    tail_hashes: NDArray[np.uint64]

    @property
    def size(self) -> int:
        return (self.table.size if self.table else 0) + int(self.tail_ids.size)


_EMPTY_IDS: IdArray = np.empty(0, np.int64)
_EMPTY_HASHES: NDArray[np.uint64] = np.empty(0, np.uint64)


class MultiIndexHashing:
    """Exact Hamming radius search over 64-bit hashes; see the module docstring."""

    def __init__(self, bits: int = BITS, *, min_tail: int = _MIN_TAIL) -> None:
        if bits != BITS:
            raise ValueError(f"multi-index hashing here is for 64-bit hashes, not {bits}")
        self._min_tail = min_tail
        self._snapshot = _Snapshot(None, _EMPTY_IDS, _EMPTY_HASHES)
        self._write_lock = threading.Lock()

    @property
    def bits(self) -> int:
        return BITS

    def __len__(self) -> int:
        return self._snapshot.size

    @property
    def nbytes(self) -> int:
        """Memory held by the index's arrays (static table and tail)."""
        now = self._snapshot
        table = now.table.nbytes if now.table else 0
        return table + now.tail_ids.nbytes + now.tail_hashes.nbytes

    @property
    def tail_size(self) -> int:
        """Hashes not yet in the static table (searched by brute force)."""
        return int(self._snapshot.tail_ids.size)

    def add(self, ids: IdArray, hashes: HashArray) -> None:
        new_hashes = as_hash_matrix(hashes, BITS)[:, 0]
        new_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if new_ids.size != new_hashes.size:
            raise ValueError("ids and hashes differ in length")
        if new_ids.size == 0:
            return
        with self._write_lock:
            now = self._snapshot
            tail_ids = np.concatenate([now.tail_ids, new_ids])
            tail_hashes = np.concatenate([now.tail_hashes, new_hashes])
            table_size = now.table.size if now.table else 0
            if tail_ids.size <= max(self._min_tail, table_size // _TAIL_FRACTION):
                self._snapshot = _Snapshot(now.table, tail_ids, tail_hashes)
                return
            if now.table is not None:
                table_ids, table_hashes = now.table.rows()
                tail_ids = np.concatenate([table_ids, tail_ids])
                tail_hashes = np.concatenate([table_hashes, tail_hashes])
            self._snapshot = _Snapshot(_Table.build(tail_ids, tail_hashes), *_empty_tail())

    def search(self, value: int, radius: int, limit: int | None = None) -> Neighbors:
        snapshot = self._snapshot
        if radius < 0 or snapshot.size == 0:
            return Neighbors.empty()
        parts: list[Hits] = []
        if snapshot.table is not None:
            parts.append(snapshot.table.search(value, min(radius, BITS)))
        if snapshot.tail_ids.size:
            distances = np.bitwise_count(snapshot.tail_hashes ^ np.uint64(value))
            hit = np.flatnonzero(distances <= radius)
            parts.append(
                Hits(
                    snapshot.tail_ids[hit],
                    distances[hit].astype(np.int64),
                    snapshot.tail_hashes[hit],
                )
            )
        if sum(len(p) for p in parts) <= _FEW:
            found = sorted(
                (int(d), int(i), int(v))
                for p in parts
                for i, d, v in zip(p.ids, p.distances, p.hashes, strict=True)
            )[:limit]
            return Neighbors(
                np.array([i for _, i, _ in found], dtype=np.int64),
                np.array([d for d, _, _ in found], dtype=np.int64),
                [v for _, _, v in found],
            )
        return order_neighbors(
            np.concatenate([np.asarray(p.ids, dtype=np.int64) for p in parts]),
            np.concatenate([np.asarray(p.distances, dtype=np.int64) for p in parts]),
            np.concatenate([np.asarray(p.hashes, dtype=np.uint64) for p in parts]),
            limit,
        )


def _empty_tail() -> tuple[IdArray, NDArray[np.uint64]]:
    return _EMPTY_IDS, _EMPTY_HASHES
