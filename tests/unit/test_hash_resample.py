"""The matrix-product resize gives exactly Pillow's LANCZOS pixels, at every size and pass order.

``dhash64`` is bit-identical to imagehash only if this holds, so it is checked against the
installed Pillow itself: exhaustively for small images (upscaling, one-pixel sides), on both
sides of Pillow 13's vertical-pass-first rule, and for camera sizes in both orientations.
"""

from __future__ import annotations

import numpy as np
import PIL
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from dhash_service.hashing import resample
from dhash_service.hashing.resample import resize_lanczos

GRIDS = [(9, 8), (17, 16)]  # dhash64 and dhash256


def pillow(image: Image.Image, width: int, height: int) -> np.ndarray:
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))


def noise(width: int, height: int, seed: int) -> Image.Image:
    """Random pixels: every source pixel matters, so any wrong weight or order shows."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))


def assert_same_as_pillow(image: Image.Image) -> None:
    for width, height in GRIDS:
        expected = pillow(image, width, height)
        got = resize_lanczos(image, width, height)
        assert got.dtype == np.uint8 and got.shape == expected.shape
        assert np.array_equal(got, expected), (image.size, (width, height))


def test_the_installed_pillow_is_one_this_reproduces() -> None:
    # A new Pillow major quietly falls back to image.resize (exact, slower); this failing means:
    # re-run these tests with resample.VERIFIED_PILLOW_MAJOR raised, then keep or fix the copy.
    assert resample.ACTIVE, f"Pillow {PIL.__version__} is not the verified major version"


@pytest.mark.parametrize("height", range(1, 25))
def test_small_and_upscaled_images_match_pillow(height: int) -> None:
    for width in range(1, 25):
        assert_same_as_pillow(noise(width, height, seed=width * 100 + height))


@pytest.mark.parametrize("offset", [-2, -1, 0, 1, 2])
@pytest.mark.parametrize("width", [10, 37, 160, 641])
def test_either_side_of_the_vertical_first_rule_matches_pillow(width: int, offset: int) -> None:
    # Pillow 13 resizes vertically first when height - 8 > 2 * (width - 9) (for the 9x8 grid).
    height = 8 + 2 * (width - 9) + offset
    assert_same_as_pillow(noise(width, height, seed=width + offset))


@pytest.mark.parametrize(
    "size",
    [(640, 480), (480, 640), (1920, 1080), (1080, 1920), (4000, 3000), (3000, 4000), (6400, 48)],
)
def test_camera_sizes_match_pillow(size: tuple[int, int]) -> None:
    # 6400 is past the side up to which weights are cached: the uncached path is the same maths.
    assert_same_as_pillow(noise(*size, seed=sum(size)))


def test_flat_and_extreme_images_match_pillow() -> None:
    for value in (0, 255):
        assert_same_as_pillow(Image.new("L", (300, 200), value))
    stripes = np.zeros((200, 300), dtype=np.uint8)
    stripes[:, ::2] = 255  # maximal overshoot of the negative lobes: clipping at both ends
    assert_same_as_pillow(Image.fromarray(stripes))


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 700),
    height=st.integers(1, 700),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_size_matches_pillow(width: int, height: int, seed: int) -> None:
    assert_same_as_pillow(noise(width, height, seed))


def test_other_modes_take_pillows_own_resize() -> None:
    image = noise(50, 40, seed=1).convert("RGB")
    assert np.array_equal(resize_lanczos(image, 9, 8), pillow(image, 9, 8))


@pytest.mark.parametrize(
    "size", [(65_535, 1), (1, 65_535), (65_535, 2), (3, 65_535), (65_535, 40), (40, 65_535)]
)
def test_strips_at_the_side_limit_match_pillow(size: tuple[int, int]) -> None:
    # The longest side of the dense-matrix path (DHASH_MAX_IMAGE_SIDE until session 5): Pillow,
    # with the products cut along the long side (and read row-wise when it is the height).
    assert_same_as_pillow(noise(*size, seed=size[0] + size[1]))


@pytest.mark.parametrize("mnk", [9 * 17, 9 * 17 * 40, 65536 * 4])
def test_products_cut_into_any_blocks_match_pillow(
    mnk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Blocks over rows, over input positions, and the transposed way for the vertical pass
    # first: sums of exact integers, so no block size may change a pixel.
    monkeypatch.setattr(resample, "_BLAS_SINGLE_THREAD_MNK", mnk)
    for size in [(640, 480), (37, 600), (600, 37), (1, 300), (300, 1), (5000, 3), (3, 5000)]:
        assert_same_as_pillow(noise(*size, seed=sum(size)))
