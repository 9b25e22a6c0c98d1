"""Algorithm ids: every stored hash names the algorithm that made it.

Only hashes with the same id are ever compared. The id spells the hash length in bits (the grid
is ``size x size``) and whether the JPEG reduce-on-load shortcut was taken, so changing the hash
size or the speed mode can never mix incompatible hashes in one index.
"""

from __future__ import annotations

from dataclasses import dataclass

from dhash_service.errors import ConfigError, InputError

DHASH64 = "dhash64"
DHASH64_FAST = "dhash64-fast"
DHASH256 = "dhash256"
DHASH256_FAST = "dhash256-fast"

ALGORITHMS: tuple[str, ...] = (DHASH64, DHASH64_FAST, DHASH256, DHASH256_FAST)

# Grid sizes we support: 8 (64-bit, imagehash's default) and 16 (256-bit).
HASH_SIZES: tuple[int, ...] = (8, 16)


@dataclass(frozen=True, slots=True)
class AlgorithmSpec:
    """What an algorithm id means: grid size and whether JPEGs are reduced on load."""

    name: str
    size: int
    fast: bool

    @property
    def bits(self) -> int:
        return self.size * self.size


def algorithm_id(size: int, *, fast: bool = False) -> str:
    """The id for a grid size and mode, e.g. ``algorithm_id(16, fast=True) == "dhash256-fast"``."""
    if size not in HASH_SIZES:
        raise ConfigError(f"hash size must be one of {HASH_SIZES}, got {size}")
    return f"dhash{size * size}" + ("-fast" if fast else "")


def algorithm_spec(name: str) -> AlgorithmSpec:
    """Parse an id; an unknown id is the caller's mistake, so it is an ``InputError``."""
    if name not in ALGORITHMS:
        raise InputError(
            f"unknown hash algorithm {name!r}; expected one of {', '.join(ALGORITHMS)}",
            detail={"algorithm": name, "supported": list(ALGORITHMS)},
        )
    fast = name.endswith("-fast")
    bits = int(name.removeprefix("dhash").removesuffix("-fast"))
    size = 8 if bits == 64 else 16
    return AlgorithmSpec(name=name, size=size, fast=fast)


def configured_algorithm(hash_algorithm: str, hash_size: int) -> str:
    """Check ``DHASH_HASH_ALGORITHM`` against ``DHASH_HASH_SIZE`` and return the id to use.

    The size setting exists so operators can say "256-bit" without learning ids; it must agree
    with the algorithm id, because silently picking one would store hashes under the wrong id.
    """
    if hash_algorithm not in ALGORITHMS:
        raise ConfigError(
            f"DHASH_HASH_ALGORITHM={hash_algorithm!r} is not one of {', '.join(ALGORITHMS)}"
        )
    spec = algorithm_spec(hash_algorithm)
    if spec.size != hash_size:
        raise ConfigError(
            f"DHASH_HASH_SIZE={hash_size} does not match DHASH_HASH_ALGORITHM={hash_algorithm!r} "
            f"(grid size {spec.size}); use {algorithm_id(hash_size, fast=spec.fast)!r} "
            f"or DHASH_HASH_SIZE={spec.size}"
            if hash_size in HASH_SIZES
            else f"DHASH_HASH_SIZE must be one of {HASH_SIZES}, got {hash_size}"
        )
    return hash_algorithm
