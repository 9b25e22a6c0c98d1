"""Extreme aspect ratios: a strip the pixel limit lets through is refused by the side limit.

Regression for a 47 KB 12,000,000 x 1 grayscale PNG that took 47.6 s and 4.6 GB in the resize
(its LANCZOS window spans the whole long side); now refused from the header.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from dhash_service.digest import digest
from dhash_service.errors import LimitExceeded
from dhash_service.extraction import Limits

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
    assert "no side may exceed 65535" in caught.value.message


@pytest.mark.parametrize("size", [(65_535, 1), (1, 65_535), (65_535, 3)])
def test_strips_at_the_side_limit_are_hashed(size: tuple[int, int]) -> None:
    result = digest(png_strip(*size), limits=LIMITS)
    assert len(result.items) == 1 and (result.items[0].width, result.items[0].height) == size


def test_side_limit_is_configurable() -> None:
    with pytest.raises(LimitExceeded):
        digest(png_strip(2000, 1), limits=Limits(max_image_side=1999))
