"""What every Hamming index offers, and how hash values travel in and out of one.

An index holds the library hashes of ONE algorithm (so of one bit length) under caller-chosen
integer ids (image ids in the service). Hash values are unsigned integers; inside an index a
64-bit hash is one ``uint64`` and a wider hash is a row of ``uint64`` words, most significant
word first, so ``words_to_int(int_to_words(v, bits)) == v``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

WORD_BITS = 64

IdArray = NDArray[np.int64]
HashArray = NDArray[np.uint64]


def word_count(bits: int) -> int:
    """Number of 64-bit words a hash of ``bits`` bits occupies (bits must be a multiple of 64)."""
    if bits <= 0 or bits % WORD_BITS:
        raise ValueError(f"hash length must be a positive multiple of 64 bits, got {bits}")
    return bits // WORD_BITS


def int_to_words(value: int, bits: int) -> HashArray:
    """One hash as a ``(words,)`` uint64 row, most significant word first."""
    words = word_count(bits)
    if value < 0 or value >> bits:
        raise ValueError(f"hash value does not fit in {bits} unsigned bits")
    mask = (1 << WORD_BITS) - 1
    return np.array(
        [(value >> (WORD_BITS * (words - 1 - i))) & mask for i in range(words)], dtype=np.uint64
    )


def words_to_int(row: HashArray) -> int:
    """Inverse of :func:`int_to_words` for one row (or one scalar uint64)."""
    value = 0
    for word in np.atleast_1d(row).tolist():
        value = (value << WORD_BITS) | int(word)
    return value


def as_hash_matrix(hashes: HashArray, bits: int) -> HashArray:
    """Normalise caller input to a C-contiguous ``(n, words)`` uint64 matrix."""
    words = word_count(bits)
    array = np.ascontiguousarray(hashes, dtype=np.uint64)
    if array.ndim == 1 and words == 1:
        array = array.reshape(-1, 1)
    if array.ndim != 2 or array.shape[1] != words:
        raise ValueError(f"expected hashes of shape (n, {words}), got {array.shape}")
    return array


@dataclass(frozen=True)
class Neighbors:
    """Search result: ids with their distances and hash values, nearest first, ties by id."""

    ids: IdArray
    distances: NDArray[np.int64]
    values: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ids.size)

    @classmethod
    def empty(cls) -> Neighbors:
        return cls(np.empty(0, np.int64), np.empty(0, np.int64), [])


def order_neighbors(
    ids: IdArray, distances: NDArray[np.int64], rows: HashArray, limit: int | None
) -> Neighbors:
    """Sort hits by (distance, id), keep the first ``limit``, convert values to ints."""
    order = np.lexsort((ids, distances))
    if limit is not None:
        order = order[:limit]
    kept = rows[order]
    values = [words_to_int(r) for r in kept] if kept.ndim == 2 else [int(v) for v in kept]
    return Neighbors(ids[order].astype(np.int64), distances[order].astype(np.int64), values)


@runtime_checkable
class HammingIndex(Protocol):
    """An exact radius search over hashes of one bit length."""

    @property
    def bits(self) -> int: ...

    def __len__(self) -> int: ...

    def add(self, ids: IdArray, hashes: HashArray) -> None:
        """Add hashes under ids; an id may appear more than once only if the caller wants that."""

    def search(self, value: int, radius: int, limit: int | None = None) -> Neighbors:
        """Every stored hash within ``radius`` bits of ``value`` (all of them, exactly)."""
