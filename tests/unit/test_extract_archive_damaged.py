"""Damaged ZIP archives: whatever zipfile or a decompressor raises is a typed input error.

An upload once answered 500 because a corrupt deflate stream raised ``zlib.error``, which is not
an ``OSError``. These tests build each kind of damage on purpose, check that it really reaches
the library error they are about, and then that extraction turns it into ``CorruptInput`` for
that member (the others are still hashed) or for the archive as a whole.
"""

from __future__ import annotations

import io
import lzma
import random
import struct
import zipfile
import zlib
from functools import cache

import pytest

from dhash_service.digest import digest
from dhash_service.errors import CorruptInput, InputError
from dhash_service.extraction import Limits
from tests.support import corpus

LIMITS = Limits()


@cache
def png(seed: int) -> bytes:
    return corpus.encode(corpus.realistic_photo(48, 32, seed), "PNG")


def damage_member(archive: bytes, name: str, *, at: float = 0.0) -> bytes:
    """Overwrite ``name``'s compressed bytes from fraction ``at`` on, leaving every header intact.

    At the start of a deflate stream, 0xff bytes declare the reserved block type 3.
    """
    with zipfile.ZipFile(io.BytesIO(archive)) as zf:
        info = zf.getinfo(name)
    name_len, extra_len = struct.unpack_from("<HH", archive, info.header_offset + 26)
    start = info.header_offset + 30 + name_len + extra_len
    middle = start + int(info.compress_size * at)
    data = bytearray(archive)
    data[middle : middle + 16] = b"\xff" * 16
    return bytes(data)


def library_error(archive: bytes, name: str) -> BaseException:
    """What zipfile itself raises reading ``name`` (so each test knows which path it covers)."""
    with zipfile.ZipFile(io.BytesIO(archive)) as zf, pytest.raises(Exception) as caught:
        zf.read(name)
    return caught.value


@pytest.mark.parametrize(
    ("compression", "at", "raised"),
    [(zipfile.ZIP_DEFLATED, 0.0, zlib.error), (zipfile.ZIP_LZMA, 0.3, lzma.LZMAError)],
    ids=["deflate", "lzma"],
)
def test_a_corrupt_compressed_member_fails_alone(
    compression: int, at: float, raised: type[BaseException]
) -> None:
    archive = corpus.zip_of([("good.png", png(1)), ("bad.png", png(2))], compression=compression)
    damaged = damage_member(archive, "bad.png", at=at)
    assert isinstance(library_error(damaged, "bad.png"), raised)

    result = digest(damaged, limits=LIMITS)

    assert [item.locator for item in result.items] == ["good.png"]
    [failure] = result.failures
    assert failure.locator == "bad.png"
    assert isinstance(failure.error, CorruptInput)
    assert "cannot be decompressed" in failure.error.message


def test_an_archive_of_only_corrupt_members_is_corrupt_input() -> None:
    damaged = damage_member(corpus.zip_of([("bad.png", png(3))]), "bad.png")
    with pytest.raises(CorruptInput):
        digest(damaged, limits=LIMITS)


def test_an_archive_needing_a_newer_zip_version_is_corrupt_input() -> None:
    archive = bytearray(corpus.zip_of([("a.png", png(4))]))
    central = archive.rfind(b"PK\x01\x02")
    struct.pack_into("<H", archive, central + 6, 124)  # "version needed to extract": 12.4
    with pytest.raises(NotImplementedError):
        zipfile.ZipFile(io.BytesIO(bytes(archive)))

    with pytest.raises(CorruptInput) as caught:
        digest(bytes(archive), limits=LIMITS)
    assert caught.value.http_status == 422


def mutations(seed: int, count: int) -> list[bytes]:
    """Deterministic byte-level damage to archives of every compression method."""
    rng = random.Random(seed)
    members = [("a.png", png(5)), ("dir/b.png", png(6))]
    archives = [
        corpus.zip_of(members, compression=method)
        for method in (
            zipfile.ZIP_STORED,
            zipfile.ZIP_DEFLATED,
            zipfile.ZIP_BZIP2,
            zipfile.ZIP_LZMA,
        )
    ]
    archives.append(corpus.nested_zip(2, ("x.png", png(7))))
    out = []
    for _ in range(count):
        data = bytearray(rng.choice(archives))
        for _ in range(rng.randint(1, 6)):
            position = rng.randrange(len(data))
            if rng.random() < 0.7:
                data[position] = rng.randrange(256)
            else:
                del data[position : position + rng.randint(1, 16)]
        out.append(bytes(data))
    return out


def test_randomly_damaged_archives_give_hashes_or_typed_errors_only() -> None:
    outcomes: dict[str, int] = {}
    for data in mutations(seed=2, count=1000):
        try:
            digest(data, limits=LIMITS)
            outcome = "hashed"
        except InputError as err:  # anything else would reach the API as a 500
            outcome = err.code
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert outcomes.get("corrupt_input", 0) > 200, outcomes  # the damage really was exercised
