"""Thumbnails made at ingest: bounded, displayable, off when asked, carried over the child pipe."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from dhash_service import digest as digest_module
from dhash_service.digest import digest
from dhash_service.errors import ConfigError
from dhash_service.extraction import Limits
from dhash_service.sandbox import wire
from dhash_service.thumbnails import MAX_THUMBNAIL_BYTES, thumbnail_of
from tests.support.corpus import encode, realistic_photo


@pytest.mark.parametrize(
    ("size", "mode", "expected"),
    [
        ((800, 600), "RGB", (256, 192)),
        ((150, 600), "L", (64, 256)),
        ((100, 80), "RGB", (100, 80)),  # never enlarged
        ((320, 240), "RGBA", (256, 192)),
        ((320, 240), "P", (256, 192)),
        ((320, 240), "CMYK", (256, 192)),
        ((320, 240), "I;16", (256, 192)),
    ],
)
def test_a_thumbnail_is_a_bounded_webp_of_the_image(
    size: tuple[int, int], mode: str, expected: tuple[int, int]
) -> None:
    image = realistic_photo(*size, seed=3).convert(mode)
    made = thumbnail_of(image, 256)
    assert made is not None
    assert (made.width, made.height) == expected and made.media_type == "image/webp"
    assert len(made.data) <= MAX_THUMBNAIL_BYTES
    with Image.open(io.BytesIO(made.data)) as back:
        assert back.format == "WEBP" and back.size == expected


def test_transparent_pixels_are_shown_on_white() -> None:
    clear = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    made = thumbnail_of(clear, 256)
    assert made is not None
    with Image.open(io.BytesIO(made.data)) as back:
        assert back.convert("L").getextrema()[0] > 240


def test_side_zero_turns_thumbnails_off_and_other_sides_are_bounded() -> None:
    assert thumbnail_of(realistic_photo(64, 64, seed=1), 0) is None
    for side in (16, 2048):
        with pytest.raises(ConfigError, match="thumbnail_side"):
            Limits(thumbnail_side=side)


def test_digest_keeps_the_hash_and_adds_the_thumbnail() -> None:
    data = encode(realistic_photo(400, 300, seed=5), "JPEG", quality=90)
    with_thumbs = digest(data, limits=Limits(thumbnail_side=128))
    without = digest(data, limits=Limits(thumbnail_side=0))
    [a], [b] = with_thumbs.items, without.items
    assert a.hash == b.hash and (a.width, a.height) == (400, 300)
    assert a.thumbnail is not None and (a.thumbnail.width, a.thumbnail.height) == (128, 96)
    assert b.thumbnail is None


def test_thumbnails_cross_the_decoder_pipe_and_oversized_ones_are_dropped() -> None:
    data = encode(realistic_photo(160, 120, seed=6), "PNG")
    result = digest(data, limits=Limits())
    back = wire.reply_from_json(wire.result_to_json(result))
    assert back.items[0].thumbnail == result.items[0].thumbnail
    big = wire.result_to_json(result).replace(b'"data": "', b'"data": "' + b"A" * 90_000, 1)
    assert wire.reply_from_json(big).items[0].thumbnail is None


def test_an_input_keeps_previews_up_to_its_budget_then_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frames = [realistic_photo(200, 150, seed=s) for s in range(4)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    monkeypatch.setattr(digest_module, "MAX_THUMBNAIL_BYTES_PER_INPUT", 1)
    result = digest(buffer.getvalue(), limits=Limits(animation_frame_step=1))
    assert len(result.items) == 4
    assert [item.thumbnail is not None for item in result.items] == [True, False, False, False]
