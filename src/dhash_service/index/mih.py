"""Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012) for 64-bit hashes: exact and fast.

Each hash is cut into ``M`` disjoint chunks. If two hashes differ in at most ``r`` bits, then,
writing ``r = M * q + a`` with ``0 <= a < M``, at least one of the first ``a + 1`` chunks
differs in at most ``q`` bits or one of the other chunks differs in at most ``q - 1`` bits
(otherwise the total would be at least ``(a + 1)(q + 1) + (M - a - 1) q = r + 1``). So probing,
per chunk, every key within that chunk radius finds every true neighbour; candidates are then
checked with the full distance, which makes the result exact. Chunks are 4 x 16 bits up to 2**23
hashes and 21 + 21 + 22 bits from there (about log2(n) bits each, as the paper advises: at 10M
hashes 16-bit buckets hold ~150 entries each and radius 10 checks ~65k candidates; 21-bit ones
check ~15k).

Layout (CSR, built with vectorised numpy, no Python loop over hashes): the rows are the hashes
stably sorted by chunk 0, so a chunk-0 bucket is a contiguous range of the hash array; for each
other chunk a ``uint32`` permutation lists the rows sorted by that chunk, and one offsets array
says where each bucket starts. With 4 chunks that is 8 (hash) + 3 * 4 (permutations) + 4 (id,
``uint32`` when every id fits) = 24 bytes per hash plus 1 MB of offsets; with 3 chunks, 20 bytes
per hash plus 32 MB of offsets (at most 4 bytes per hash where that layout is used). Chunk 0
always carries the largest probe radius, so a good share of the candidates is read as contiguous
memory; the other chunks' candidates cost one random read each.

New hashes go to a small brute-force tail; when the tail outgrows ``max(16384, n / 256)`` the
static part is rebuilt off the search path and swapped in. Searches read one immutable snapshot,
so they need no lock.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import cached_property, lru_cache
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
_MIN_TAIL = 16_384
_TAIL_FRACTION = 256
# Past this many candidates per stored hash a plain scan of the hashes is cheaper.
_SCAN_SHARE = 0.35
# Up to this many hits, post-processing in plain Python beats a dozen numpy calls.
_FEW = 256
# Plans with at most this many probes take the plain-Python bucket lookup.
_FEW_PROBES = 96
# Plans are only built up to this many probes; past it (large radii) the table scans instead.
_MAX_PROBES = 1 << 20
_UINT32_MAX = 2**32 - 1
_EMPTY_ROWS: NDArray[np.uint32] = np.empty(0, np.uint32)


@dataclass(frozen=True)
class Layout:
    """How a 64-bit hash is cut into chunks: their widths, least significant chunk first."""

    widths: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.widths)

    @cached_property
    def shifts(self) -> tuple[int, ...]:
        return tuple(sum(self.widths[:c]) for c in range(self.count))

    @cached_property
    def masks(self) -> tuple[int, ...]:
        return tuple((1 << w) - 1 for w in self.widths)

    @cached_property
    def bases(self) -> tuple[int, ...]:
        """Index of each chunk's first bucket in the one offsets array."""
        return tuple(sum(1 << w for w in self.widths[:c]) for c in range(self.count))

    @cached_property
    def buckets(self) -> int:
        return sum(1 << w for w in self.widths)

    def chunk(self, hashes: NDArray[np.uint64], c: int) -> NDArray[np.unsignedinteger[Any]]:
        key_type = np.uint16 if self.widths[c] <= 16 else np.uint32
        mask = np.uint64((1 << self.widths[c]) - 1)
        return ((hashes >> np.uint64(self.shifts[c])) & mask).astype(key_type)

    def chunk_radii(self, radius: int) -> tuple[int, ...]:
        """Per chunk, the radius to probe: the pigeonhole split in the module docstring."""
        per_chunk, extra = divmod(radius, self.count)
        return tuple(per_chunk if c <= extra else per_chunk - 1 for c in range(self.count))

    def probe_count(self, radius: int) -> int:
        return _probe_count(self, radius)


@lru_cache(maxsize=4 * BITS)
def _probe_count(layout: Layout, radius: int) -> int:
    """How many buckets a search at ``radius`` probes (without building the plan)."""
    return sum(
        sum(math.comb(w, k) for k in range(min(r, w) + 1))
        for w, r in zip(layout.widths, layout.chunk_radii(radius), strict=True)
        if r >= 0
    )


# Four 16-bit chunks suit up to a few million hashes. Past that, buckets hold so many entries
# that three ~21-bit chunks (about log2(n) bits each, as Norouzi et al. advise) check 4x fewer
# candidates at radius 10; their 8.4M bucket offsets (32 MB) cost at most 4 bytes per hash
# from 2**23 hashes on.
NARROW = Layout((16, 16, 16, 16))
WIDE = Layout((21, 21, 22))
WIDE_FROM = 1 << 23


def layout_for(size: int) -> Layout:
    return WIDE if size >= WIDE_FROM else NARROW


@lru_cache(maxsize=64)
def _keys_within(radius: int, width: int) -> NDArray[np.int64]:
    """All ``width``-bit XOR masks with at most ``radius`` bits set."""
    counts = np.bitwise_count(np.arange(1 << width, dtype=np.uint32))
    return np.flatnonzero(counts <= radius).astype(np.int64)


@dataclass(frozen=True)
class ProbePlan:
    """Per probe: which chunk, which XOR mask, and the chunk's first bucket."""

    chunk: NDArray[np.int64]
    masks: NDArray[np.int64]
    bases: NDArray[np.int64]
    triples: tuple[tuple[int, int, int], ...]  # (chunk, mask, base) as ints, for small plans
    primary: int  # probes of chunk 0 (they come first)

    @property
    def size(self) -> int:
        return int(self.masks.size)


@lru_cache(maxsize=4 * BITS)
def probe_plan(radius: int, layout: Layout = NARROW) -> ProbePlan:
    """The probes for a radius (callers check ``layout.probe_count`` against the table first)."""
    chunk_ids: list[NDArray[np.int64]] = []
    masks: list[NDArray[np.int64]] = []
    for chunk, chunk_radius in enumerate(layout.chunk_radii(radius)):
        if chunk_radius < 0:
            continue
        width = layout.widths[chunk]
        keys = _keys_within(min(chunk_radius, width), width)
        chunk_ids.append(np.full(keys.size, chunk, np.int64))
        masks.append(keys)
    chunk_of = np.concatenate(chunk_ids)
    all_masks = np.concatenate(masks)
    bases = np.array(layout.bases, dtype=np.int64)[chunk_of]
    triples = (
        tuple(zip(chunk_of.tolist(), all_masks.tolist(), bases.tolist(), strict=True))
        if chunk_of.size <= _FEW_PROBES
        else ()
    )
    return ProbePlan(chunk_of, all_masks, bases, triples, int(np.count_nonzero(chunk_of == 0)))


def _stable_order(keys: NDArray[np.unsignedinteger[Any]]) -> NDArray[np.intp]:
    """``argsort(keys, kind="stable")``, as two 16-bit radix passes when keys are wider.

    numpy radix-sorts keys of 16 bits or less; wider keys would take its merge sort, ~5x slower
    on 10M hashes. Sorting stably by the low 16 bits, then by the rest, is the same order.
    """
    if keys.dtype.itemsize <= 2:
        return np.argsort(keys, kind="stable")
    low = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    high = np.argsort((keys[low] >> 16).astype(np.uint16), kind="stable")
    return low[high]


@dataclass(frozen=True)
class _Table:
    """The static part; immutable once built.

    Rows are the stored hashes ordered by chunk 0, so chunk 0's buckets are plain ranges of
    ``hashes`` and need no permutation; every other chunk keeps a permutation (rows ordered by
    that chunk's value). ``offsets`` holds where each bucket starts: chunk ``c``'s buckets span
    slots ``[c * n, (c + 1) * n)``; slot ``s < n`` is row ``s``, slot ``s >= n`` is row
    ``perms[s - n]``.
    """

    layout: Layout
    ids: NDArray[np.integer[Any]]  # row -> caller id (uint32 when every id fits)
    hashes: NDArray[np.uint64]  # row -> hash
    perms: NDArray[np.unsignedinteger[Any]]  # (chunks - 1) * n rows, by chunk 1, then 2, ...
    offsets: NDArray[np.unsignedinteger[Any]]  # layout.buckets + 1 slots
    offset_view: memoryview  # the same memory; one item costs less than numpy indexing

    @property
    def size(self) -> int:
        return int(self.hashes.size)

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.hashes.nbytes + self.perms.nbytes + self.offsets.nbytes

    @classmethod
    def build(
        cls, ids: IdArray, hashes: NDArray[np.uint64], layout: Layout | None = None
    ) -> _Table:
        n = int(hashes.size)
        layout = layout or layout_for(n)
        fits = bool(ids.size) and int(ids.min()) >= 0 and int(ids.max()) <= _UINT32_MAX
        row_type: type[np.unsignedinteger[Any]] = np.uint32 if n <= _UINT32_MAX else np.uint64
        slot_type: type[np.unsignedinteger[Any]] = (
            np.uint32 if layout.count * n <= _UINT32_MAX else np.uint64
        )
        id_type: type[np.integer[Any]] = np.uint32 if fits else np.int64
        # Rows take chunk 0's order (a stable argsort of 16-bit keys is a radix sort).
        order = _stable_order(layout.chunk(hashes, 0))
        row_hashes = hashes[order]
        row_ids = ids[order].astype(id_type)
        del order
        counts = np.empty(layout.buckets, dtype=np.int64)
        perms: NDArray[np.unsignedinteger[Any]] = np.empty((layout.count - 1) * n, dtype=row_type)
        for chunk in range(layout.count):  # one iteration per chunk, vectorised over all hashes
            keys = layout.chunk(row_hashes, chunk)
            base, width = layout.bases[chunk], layout.widths[chunk]
            counts[base : base + (1 << width)] = np.bincount(keys, minlength=1 << width)
            if chunk:
                perms[(chunk - 1) * n : chunk * n] = _stable_order(keys)
        offsets: NDArray[np.unsignedinteger[Any]] = np.zeros(layout.buckets + 1, dtype=slot_type)
        np.cumsum(counts, out=offsets[1:], dtype=slot_type)
        return cls(layout, row_ids, row_hashes, perms, offsets, offsets.data)

    def search(self, value: int, radius: int) -> Hits:
        """Rows within ``radius`` with distances and hashes (unsorted, each row once).

        At small radii the fixed cost of each numpy call, not the data, dominates a query, so
        a plan with few probes looks its buckets up in plain Python and makes few gathers.
        """
        layout = self.layout
        if layout.probe_count(radius) > min(_MAX_PROBES, self.size):
            return self._scan(value, radius)
        plan = probe_plan(radius, layout)
        query_chunks = [
            (value >> shift) & mask for shift, mask in zip(layout.shifts, layout.masks, strict=True)
        ]
        if plan.size <= _FEW_PROBES:
            return self._search_few_probes(value, radius, plan, query_chunks)
        keys = (np.array(query_chunks, np.int64)[plan.chunk] ^ plan.masks) + plan.bases
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

    def _search_few_probes(
        self, value: int, radius: int, plan: ProbePlan, query_chunks: list[int]
    ) -> Hits:
        offsets = self.offset_view
        n = self.size
        primary: list[tuple[int, int]] = []  # chunk 0's buckets: ranges of rows
        others: list[NDArray[np.unsignedinteger[Any]]] = []  # other chunks': slices of perms
        for chunk, mask, base in plan.triples:
            key = (query_chunks[chunk] ^ mask) + base
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

    def __init__(
        self, bits: int = BITS, *, min_tail: int = _MIN_TAIL, layout: Layout | None = None
    ) -> None:
        if bits != BITS:
            raise ValueError(f"multi-index hashing here is for 64-bit hashes, not {bits}")
        self._min_tail = min_tail
        self._layout = layout  # None: chosen by size at each build
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
            self._snapshot = _Snapshot(
                _Table.build(tail_ids, tail_hashes, self._layout), *_empty_tail()
            )

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
