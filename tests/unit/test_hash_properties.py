"""Property tests: a lossless re-encoding never changes a hash."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from dhash_service.digest import digest
from dhash_service.extraction import Limits
from dhash_service.hashing import ALGORITHMS, ImageHash, hash_image
from tests.support import corpus

LIMITS = Limits()

# Lossless encodings and the modes each can hold exactly.
LOSSLESS: dict[str, tuple[tuple[str, ...], dict[str, object]]] = {
    "PNG": (("L", "RGB", "RGBA"), {}),
    "BMP": (("L", "RGB"), {}),
    "TIFF": (("L", "RGB", "RGBA"), {"compression": "tiff_lzw"}),
    # exact=True keeps the colour of fully transparent pixels, which dhash (ignoring alpha) sees.
    "WEBP": (("RGB", "RGBA"), {"lossless": True, "exact": True}),
}

settings.register_profile(
    "dhash-unit", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def images(draw: st.DrawFn) -> tuple[Image.Image, str, dict[str, object]]:
    fmt = draw(st.sampled_from(sorted(LOSSLESS)))
    modes, params = LOSSLESS[fmt]
    mode = draw(st.sampled_from(modes))
    width = draw(st.integers(1, 48))
    height = draw(st.integers(1, 48))
    seed = draw(st.integers(0, 2**32 - 1))
    photo_like = draw(st.booleans())
    if photo_like:
        image = corpus.realistic_photo(width, height, seed).convert(mode)
    else:
        rng = np.random.default_rng(seed)
        bands = len(mode)
        pixels = rng.integers(0, 256, size=(height, width, bands), dtype=np.uint8)
        image = Image.fromarray(pixels[..., 0] if bands == 1 else pixels, mode)
    return image, fmt, params


@settings(settings.get_profile("dhash-unit"))
@given(images(), st.sampled_from(ALGORITHMS))
def test_hash_survives_lossless_reencoding(
    case: tuple[Image.Image, str, dict[str, object]], algorithm: str
) -> None:
    image, fmt, params = case
    original = hash_image(image, algorithm)
    encoded = corpus.encode(image, fmt, **params)
    assert hash_image(Image.open(io.BytesIO(encoded)), algorithm).value == original.value
    through_service = digest(encoded, algorithm=algorithm, limits=LIMITS).items[0].hash
    assert through_service.value == original.value


@settings(settings.get_profile("dhash-unit"))
@given(st.integers(0, 2**64 - 1))
def test_hex_round_trip_64(value: int) -> None:
    h = ImageHash(value, "dhash64", 64)
    assert len(h.hex()) == 16
    assert ImageHash.from_hex(h.hex()) == h
    assert ImageHash.from_hex(h.hex().upper()) == h


@settings(settings.get_profile("dhash-unit"))
@given(st.integers(0, 2**256 - 1))
def test_hex_round_trip_256(value: int) -> None:
    h = ImageHash(value, "dhash256", 256)
    assert ImageHash.from_hex(h.hex(), "dhash256") == h
