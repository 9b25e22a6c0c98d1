"""After a large request the worker gives its freed heap back (malloc_trim).

Regression: 1.7 GB stayed resident in a worker after one large request.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dhash_service import memory
from dhash_service.digest import digest
from dhash_service.extraction import Limits

pytestmark = pytest.mark.slow  # encodes and decodes a 64-megapixel image

MIB = 1024 * 1024


@pytest.mark.skipif(memory.resident_bytes() == 0, reason="needs /proc")
def test_trim_returns_the_heap_a_64_megapixel_decode_left_behind() -> None:
    period = (np.arange(8000 * 3 * 97, dtype=np.uint32) % 97).astype(np.uint8)  # 97 rows
    pixels = np.resize(period, 8000 * 8000 * 3)  # repeated: no 768 MB uint32 array to build
    encoded = io.BytesIO()
    Image.fromarray(pixels.reshape(8000, 8000, 3)).save(encoded, format="PNG", compress_level=1)
    del pixels
    data = encoded.getvalue()
    memory.trim()
    before = memory.resident_bytes()
    result = digest(data, limits=Limits())
    assert result.items[0].width == 8000
    del result
    assert memory.trim()
    after = memory.resident_bytes()
    print(f"resident before {before / MIB:.0f} MiB, after digest and trim {after / MIB:.0f} MiB")
    assert after < before + 64 * MIB  # the ~190 MB of decoded pixels went back
