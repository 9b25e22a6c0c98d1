"""Extreme aspect ratios: a strip the pixel limit lets through is refused by the side limit.

Regression for a 47 KB 12,000,000 x 1 grayscale PNG that took 47.6 s and 4.6 GB in the resize
(its LANCZOS window spans the whole long side). The resize's memory no longer grows with the
side (tests/unit/test_hash_resample_streamed.py); its time does, so the side limit (2,097,152)
still refuses such a strip from the header, and no setting may pass what Pillow can resize.
"""

from __future__ import annotations

import io
import math
import time

import numpy as np
import pytest
from PIL import Image

from dhash_service.digest import digest
from dhash_service.errors import ConfigError, LimitExceeded
from dhash_service.extraction import Limits
from dhash_service.extraction.limits import PILLOW_MAX_RESIZE_SIDE

LIMITS = Limits()


def png_strip(width: int, height: int) -> bytes:
    rng = np.random.default_rng(width + height)
    pixels = rng.integers(0, 256, (height, width), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


@pytest.mark.parametrize("size", [(12_000_000, 1), (1, 12_000_000)])
def test_twelve_megapixel_strip_is_refused_from_the_header(size: tuple[int, int]) -> None:
    data = png_strip(*size)
    started = time.process_time()
    with pytest.raises(LimitExceeded) as caught:
        digest(data, limits=LIMITS)
    assert time.process_time() - started < 2.0  # refused before any decode or resize
    assert caught.value.detail["limit"] == LIMITS.max_image_side
    assert "no side may exceed 2097152 pixels (DHASH_MAX_IMAGE_SIDE" in caught.value.message


@pytest.mark.parametrize("size", [(65_535, 1), (1, 65_535), (65_535, 3), (2_097_152, 1)])
def test_strips_at_the_side_limit_are_hashed(size: tuple[int, int]) -> None:
    result = digest(png_strip(*size), limits=LIMITS)
    assert len(result.items) == 1 and (result.items[0].width, result.items[0].height) == size


def test_side_limit_is_configurable() -> None:
    with pytest.raises(LimitExceeded):
        digest(png_strip(2000, 1), limits=Limits(max_image_side=1999))


def test_a_side_limit_past_what_pillow_can_resize_is_refused_at_start_up() -> None:
    Limits(max_image_side=PILLOW_MAX_RESIZE_SIDE)
    with pytest.raises(ConfigError, match="longest side Pillow itself can resize"):
        Limits(max_image_side=PILLOW_MAX_RESIZE_SIDE + 1)


def pillow_ceiling(out_size: int) -> int:
    """The longest side Pillow resizes to ``out_size``: ``outSize > INT_MAX / (ksize * 8)`` is
    its refusal, with ``ksize = 2 * ceil(3 * side / out) + 1`` (Resample.c)."""

    def fits(side: int) -> bool:
        return out_size <= (2**31 - 1) // ((math.ceil(3 * side / out_size) * 2 + 1) * 8)

    low, high = out_size, 2**31  # fits(low), not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def test_the_ceiling_is_where_pillow_stops_resizing_to_the_dhash256_grid() -> None:
    # 17 wide is the tightest grid by this formula; one pixel more and Pillow refuses, before
    # allocating anything, so imagehash cannot hash it either. (Pillow still resized a
    # 44,739,241 x 1 strip to 9 wide, so the formula is not exact for every width: the setting
    # stops at the dhash256 figure; the ceiling itself is not run, it would take ~2 GB.)
    assert pillow_ceiling(17) == PILLOW_MAX_RESIZE_SIDE
    strip = Image.new("L", (PILLOW_MAX_RESIZE_SIDE + 1, 1))
    with pytest.raises(MemoryError):
        strip.resize((17, 1), Image.Resampling.LANCZOS)
