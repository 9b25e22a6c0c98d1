"""Hamming-distance indexes: a brute-force reference and multi-index hashing, one protocol."""

from __future__ import annotations

from typing import Literal

from dhash_service.index.brute import BruteForceIndex
from dhash_service.index.mih import MultiIndexHashing
from dhash_service.index.protocol import (
    HammingIndex,
    Neighbors,
    int_to_words,
    word_count,
    words_to_int,
)

IndexKind = Literal["mih", "brute"]


def new_index(kind: IndexKind, bits: int) -> HammingIndex:
    """The configured index for a hash length; MIH covers 64-bit hashes, wider ones scan."""
    if kind == "mih" and bits == MultiIndexHashing().bits:
        return MultiIndexHashing()
    return BruteForceIndex(bits)


__all__ = [
    "BruteForceIndex",
    "HammingIndex",
    "IndexKind",
    "MultiIndexHashing",
    "Neighbors",
    "int_to_words",
    "new_index",
    "word_count",
    "words_to_int",
]
