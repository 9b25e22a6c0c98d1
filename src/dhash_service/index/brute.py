"""The reference index: compare the query with every stored hash (numpy ``bitwise_count``).

It is the definition the faster index is tested against, and the right choice for small
libraries and for hash lengths the multi-index layout does not cover.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dhash_service.index.protocol import (
    HashArray,
    IdArray,
    Neighbors,
    as_hash_matrix,
    int_to_words,
    order_neighbors,
    word_count,
)


def hamming_to_all(matrix: HashArray, query: HashArray) -> NDArray[np.integer[Any]]:
    """Distances from one ``(words,)`` query to every row of an ``(n, words)`` matrix.

    Kept in the narrowest integer type (uint8 for 64-bit hashes): at 10M hashes widening every
    distance to int64 before filtering would double the time of a scan.
    """
    if matrix.shape[1] == 1:
        single: NDArray[np.uint8] = np.bitwise_count(matrix[:, 0] ^ query[0])
        return single
    summed: NDArray[np.uint16] = np.bitwise_count(matrix ^ query).sum(axis=1, dtype=np.uint16)
    return summed


class BruteForceIndex:
    """Linear scan; appends copy the arrays, so a search never sees a half-written state."""

    def __init__(self, bits: int = 64) -> None:
        self._bits = bits
        self._words = word_count(bits)
        self._ids: IdArray = np.empty(0, np.int64)
        self._hashes: HashArray = np.empty((0, self._words), np.uint64)
        self._lock = threading.Lock()

    @property
    def bits(self) -> int:
        return self._bits

    def __len__(self) -> int:
        return int(self._ids.size)

    def add(self, ids: IdArray, hashes: HashArray) -> None:
        matrix = as_hash_matrix(hashes, self._bits)
        new_ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if new_ids.size != matrix.shape[0]:
            raise ValueError("ids and hashes differ in length")
        with self._lock:
            hashes_now = np.concatenate([self._hashes, matrix])
            ids_now = np.concatenate([self._ids, new_ids])
            self._hashes, self._ids = hashes_now, ids_now

    def search(self, value: int, radius: int, limit: int | None = None) -> Neighbors:
        ids, hashes = self._ids, self._hashes  # one consistent snapshot
        if radius < 0 or ids.size == 0:
            return Neighbors.empty()
        distances = hamming_to_all(hashes, int_to_words(value, self._bits))
        hits = np.flatnonzero(distances <= radius)
        return order_neighbors(ids[hits], distances[hits].astype(np.int64), hashes[hits], limit)
