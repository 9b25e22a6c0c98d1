"""dhash64 is bit-identical to imagehash.dhash on every kind of image we accept."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import imagehash
import pytest
from PIL import Image

from dhash_service.digest import digest
from dhash_service.errors import ConfigError, InputError
from dhash_service.extraction import Limits
from dhash_service.hashing import (
    ALGORITHMS,
    ImageHash,
    algorithm_id,
    algorithm_spec,
    configured_algorithm,
    hamming,
    hash_image,
)
from tests.support import corpus

LIMITS = Limits()

CORPUS: dict[str, Callable[[], bytes]] = {
    "jpeg-baseline": lambda: corpus.photo_jpeg(320, 240, 1),
    "jpeg-progressive": lambda: corpus.photo_jpeg(320, 240, 2, progressive=True),
    "jpeg-odd-size": lambda: corpus.photo_jpeg(333, 187, 3, quality=75),
    "jpeg-grayscale": lambda: corpus.encode(
        corpus.realistic_photo(200, 150, 4).convert("L"), "JPEG"
    ),
    "jpeg-cmyk": lambda: corpus.cmyk_jpeg(160, 120, 5),
    "jpeg-exif-rotated": lambda: corpus.exif_rotated_jpeg(160, 120, 6),
    "jpeg-mpo": lambda: corpus.encode(
        corpus.realistic_photo(160, 120, 19),
        "MPO",
        save_all=True,
        append_images=[corpus.realistic_photo(160, 120, 20)],
    ),
    "png-rgba": lambda: corpus.png_with_alpha(160, 120, 7),
    "png-palette-transparent": lambda: corpus.palette_png(160, 120, 8),
    "png-palette": lambda: corpus.palette_png(160, 120, 9, transparent=False),
    "png-16bit": lambda: corpus.png16(160, 120, 10),
    "png-1x1": lambda: corpus.encode(Image.new("RGB", (1, 1), (12, 200, 99)), "PNG"),
    "png-5x3": lambda: corpus.encode(corpus.realistic_photo(5, 3, 11), "PNG"),
    "gif-animated": lambda: corpus.animation("GIF", 96, 64, 3, 12),
    "apng-animated": lambda: corpus.animation("PNG", 96, 64, 3, 13),
    "webp-animated": lambda: corpus.animation("WEBP", 96, 64, 3, 14),
    "webp-lossy": lambda: corpus.encode(corpus.realistic_photo(160, 120, 15), "WEBP"),
    "tiff": lambda: corpus.encode(corpus.realistic_photo(160, 120, 16), "TIFF"),
    "bmp": lambda: corpus.encode(corpus.realistic_photo(160, 120, 17), "BMP"),
    "avif": lambda: corpus.encode(corpus.realistic_photo(160, 120, 18), "AVIF"),
}


@cache
def sample(name: str) -> bytes:
    return CORPUS[name]()


def imagehash_hex(data: bytes, hash_size: int = 8) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # imagehash's convert() warns on palette transparency
        return str(imagehash.dhash(Image.open(io.BytesIO(data)), hash_size=hash_size))


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_dhash64_of_the_file_equals_imagehash(name: str) -> None:
    data = sample(name)
    result = digest(data, limits=LIMITS)
    assert len(result.items) == 1
    assert result.items[0].hash.hex() == imagehash_hex(data)
    assert result.items[0].hash.algorithm == "dhash64"


@pytest.mark.parametrize("name", ["jpeg-baseline", "png-rgba", "gif-animated", "png-1x1"])
def test_dhash256_equals_imagehash_with_hash_size_16(name: str) -> None:
    data = sample(name)
    item = digest(data, algorithm="dhash256", limits=LIMITS).items[0]
    assert item.hash.bits == 256
    assert item.hash.hex() == imagehash_hex(data, hash_size=16)
    assert len(item.hash.hex()) == 64


def test_hash_image_value_uses_imagehash_bit_order() -> None:
    image = Image.open(io.BytesIO(sample("jpeg-baseline")))
    reference = imagehash.dhash(image)
    bits = "".join("1" if b else "0" for b in reference.hash.flatten())
    assert hash_image(image).value == int(bits, 2)


@pytest.mark.parametrize("name", ["png-rgba", "gif-animated", "bmp", "png-16bit"])
def test_fast_mode_takes_the_exact_path_for_non_jpeg(name: str) -> None:
    data = sample(name)
    fast = digest(data, algorithm="dhash64-fast", limits=LIMITS).items[0].hash
    exact = digest(data, limits=LIMITS).items[0].hash
    assert fast.value == exact.value
    assert fast.algorithm == "dhash64-fast"


def test_fast_mode_reduces_jpegs_on_load_and_stays_close() -> None:
    drifts = []
    for seed in range(6):
        data = corpus.photo_jpeg(1200, 900, 100 + seed, progressive=seed % 2 == 1)
        lazy = Image.open(io.BytesIO(data))
        fast = hash_image(lazy, "dhash64-fast")
        assert lazy.size == (150, 113)  # decoded at 1/8 scale by libjpeg
        assert lazy.mode == "L"
        exact = hash_image(Image.open(io.BytesIO(data)))
        drifts.append(hamming(fast.value, exact.value))
    assert max(drifts) <= 6
    assert sum(drifts) / len(drifts) <= 2


def test_digest_reports_original_size_even_when_the_jpeg_was_reduced() -> None:
    data = corpus.photo_jpeg(800, 600, 7)
    item = digest(data, algorithm="dhash64-fast", limits=LIMITS).items[0]
    assert (item.width, item.height) == (800, 600)


def test_an_already_decoded_jpeg_hashes_exactly_in_fast_mode() -> None:
    image = Image.open(io.BytesIO(sample("jpeg-baseline")))
    image.load()
    assert hash_image(image, "dhash64-fast").value == hash_image(image).value


def test_hashing_is_thread_safe_and_deterministic() -> None:
    payloads = [corpus.photo_jpeg(400, 300, seed) for seed in range(12)]

    def run(data: bytes) -> str:
        return hash_image(Image.open(io.BytesIO(data))).hex()

    sequential = [run(p) for p in payloads]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            assert list(pool.map(run, payloads)) == sequential


def test_hex_round_trips_and_pads_with_zeros() -> None:
    h = ImageHash(value=0x00F0, algorithm="dhash64", bits=64)
    assert h.hex() == "00000000000000f0"
    assert ImageHash.from_hex(h.hex()) == h
    big = ImageHash.from_hex("ff" * 32, "dhash256-fast")
    assert big.bits == 256
    assert big.value == 2**256 - 1


@pytest.mark.parametrize("text", ["", "123", "zz00000000000000", "0" * 17, "0x" + "0" * 14])
def test_from_hex_refuses_bad_text(text: str) -> None:
    with pytest.raises(InputError):
        ImageHash.from_hex(text)


def test_from_hex_refuses_a_64_bit_hash_as_256_bit() -> None:
    with pytest.raises(InputError, match="64 hex digits"):
        ImageHash.from_hex("0" * 16, "dhash256")


def test_hamming_counts_differing_bits() -> None:
    assert hamming(0, 0) == 0
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2**64 - 1, 0) == 64


def test_hashes_of_different_algorithms_never_compare() -> None:
    a = ImageHash(1, "dhash64", 64)
    b = ImageHash(1, "dhash64-fast", 64)
    assert a.distance(ImageHash(3, "dhash64", 64)) == 1
    with pytest.raises(InputError):
        a.distance(b)


def test_algorithm_ids_encode_bits_and_mode() -> None:
    assert ALGORITHMS == ("dhash64", "dhash64-fast", "dhash256", "dhash256-fast")
    assert algorithm_id(8) == "dhash64"
    assert algorithm_id(16, fast=True) == "dhash256-fast"
    spec = algorithm_spec("dhash256-fast")
    assert (spec.size, spec.fast, spec.bits) == (16, True, 256)
    with pytest.raises(ConfigError):
        algorithm_id(12)


def test_unknown_algorithm_is_refused_before_any_decoding() -> None:
    with pytest.raises(InputError, match="unknown hash algorithm"):
        digest(b"not even an image", algorithm="phash", limits=LIMITS)
    with pytest.raises(InputError):
        hash_image(Image.new("L", (10, 10)), "dhash128")


def test_configured_algorithm_checks_the_size_setting() -> None:
    assert configured_algorithm("dhash256-fast", 16) == "dhash256-fast"
    with pytest.raises(ConfigError, match="does not match"):
        configured_algorithm("dhash64", 16)
    with pytest.raises(ConfigError):
        configured_algorithm("md5", 8)


def test_flat_and_tiny_images_are_low_information() -> None:
    flat = Image.new("RGB", (640, 480), (120, 130, 140))
    assert hash_image(flat).low_information
    near_flat = corpus.realistic_photo(64, 48, 3).point(lambda v: 100 + v // 128)
    assert hash_image(near_flat).low_information
    assert hash_image(Image.open(io.BytesIO(sample("png-5x3")))).low_information
    assert hash_image(Image.open(io.BytesIO(sample("png-1x1")))).low_information


def test_photos_are_not_low_information() -> None:
    flagged = [
        seed
        for seed in range(20)
        if hash_image(corpus.realistic_photo(320, 240, seed)).low_information
    ]
    assert flagged == []
