"""digest(): bytes to hashed items, timing each item, keeping partial failures."""

from __future__ import annotations

import io
from typing import Any

import imagehash
import pytest
from PIL import Image

from dhash_service.digest import digest
from dhash_service.extraction import Limits
from tests.support import corpus

LIMITS = Limits()


def test_each_item_reports_size_kind_and_its_own_time() -> None:
    data = corpus.zip_of(
        [("a.jpg", corpus.photo_jpeg(320, 240, 1)), ("b.png", corpus.png_with_alpha(64, 32, 2))]
    )
    result = digest(data, limits=LIMITS)
    assert result.input_kind == "zip"
    assert [(i.locator, i.kind, i.width, i.height) for i in result.items] == [
        ("a.jpg", "image", 320, 240),
        ("b.png", "image", 64, 32),
    ]
    for item in result.items:
        assert 0 < item.seconds < 5
        assert item.hash.algorithm == "dhash64"


def test_digest_matches_imagehash_for_a_plain_file() -> None:
    data = corpus.photo_jpeg(500, 375, 3, progressive=True)
    (item,) = digest(data, limits=LIMITS).items
    assert item.hash.hex() == str(imagehash.dhash(Image.open(io.BytesIO(data))))


def test_partial_failures_are_returned_next_to_the_hashes() -> None:
    data = corpus.zip_of(
        [
            ("ok.jpg", corpus.photo_jpeg(64, 48, 1)),
            ("cut.png", corpus.truncated(corpus.png16(64, 48, 2))),
        ]
    )
    result = digest(data, limits=LIMITS)
    assert [i.locator for i in result.items] == ["ok.jpg"]
    assert [(f.locator, f.error.code) for f in result.failures] == [("cut.png", "corrupt_input")]


def test_images_are_released_once_hashed(monkeypatch: pytest.MonkeyPatch) -> None:
    from dhash_service import digest as digest_module
    from dhash_service.extraction import Extraction, extract

    seen: list[Extraction] = []

    def recording_extract(data: bytes, **kwargs: Any) -> Extraction:
        seen.append(extract(data, **kwargs))
        return seen[-1]

    monkeypatch.setattr(digest_module, "extract", recording_extract)
    data = corpus.zip_of([(f"{i}.jpg", corpus.photo_jpeg(64, 48, i)) for i in range(3)])
    assert len(digest(data, limits=LIMITS).items) == 3
    for item in seen[0].items:
        with pytest.raises(ValueError, match="closed image"):
            item.image.tobytes()
