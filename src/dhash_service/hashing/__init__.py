"""Perceptual hashing: ``dhash64`` (bit-identical to imagehash) and its JPEG fast path."""

from dhash_service.hashing.algorithms import (
    ALGORITHMS,
    DHASH64,
    DHASH64_FAST,
    DHASH256,
    DHASH256_FAST,
    HASH_SIZES,
    AlgorithmSpec,
    algorithm_id,
    algorithm_spec,
    configured_algorithm,
)
from dhash_service.hashing.dhash import ImageHash, hamming, hash_image, to_grayscale

__all__ = [
    "ALGORITHMS",
    "DHASH64",
    "DHASH64_FAST",
    "DHASH256",
    "DHASH256_FAST",
    "HASH_SIZES",
    "AlgorithmSpec",
    "ImageHash",
    "algorithm_id",
    "algorithm_spec",
    "configured_algorithm",
    "hamming",
    "hash_image",
    "to_grayscale",
]
