"""The request's time budget is checked inside the hash: the resize calls the caller's check
between its blocks, stops at the first block past the deadline, and gives the same pixels when
the budget holds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dhash_service.digest import _hash_item
from dhash_service.errors import TimeBudgetExceeded
from dhash_service.extraction import ExtractedImage
from dhash_service.extraction.limits import ItemBudget
from dhash_service.hashing import hash_image, resample
from dhash_service.hashing.resample import resize_lanczos

# 2,097,152 x 1 (the default side limit) to 9 wide: the streamed path, each output's window
# ~1.4M weights, made in blocks of 65,536 (22 per window), one check before each block.
STRIP = (2_097_152, 1)


class Expired(Exception):
    """What the test's check raises: the core passes on whatever the caller's check raises."""


def strip(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width + height)
    return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))


@pytest.fixture(scope="module")
def long_strip() -> Image.Image:
    return strip(*STRIP)


def count_blocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Each block of weights the resize makes, by its offset in its window."""
    made: list[int] = []
    real = resample._Window._raw

    def spy(window: resample._Window, offset: int, n: int, libm: bool) -> np.ndarray:
        made.append(offset)
        return real(window, offset, n, libm)

    monkeypatch.setattr(resample._Window, "_raw", spy)
    return made


@pytest.mark.parametrize(
    ("deadline", "blocks"),
    [
        (-1, 0),  # already expired: not one weight is made
        (0, 1),  # expires with the first block: stopped before the second
        (3, 4),
        (20, 21),
    ],
)
def test_a_strip_stops_at_the_first_block_past_its_deadline(
    long_strip: Image.Image, monkeypatch: pytest.MonkeyPatch, deadline: int, blocks: int
) -> None:
    # The clock is the number of blocks made so far: each block "takes" one tick.
    made = count_blocks(monkeypatch)

    def check() -> None:
        if len(made) > deadline:
            raise Expired

    with pytest.raises(Expired):
        resize_lanczos(long_strip, 9, 8, check)
    assert len(made) == blocks


@pytest.mark.parametrize(
    "size",
    [(1920, 1080), (7000, 600), (300_000, 2), (40, 70_000)],
    ids=["ordinary", "dense-uncached", "streamed", "streamed-vertical-first"],
)
@pytest.mark.parametrize("grid", [(9, 8), (17, 16)], ids=["dhash64", "dhash256"])
def test_a_check_that_holds_changes_nothing_and_runs_between_blocks(
    size: tuple[int, int], grid: tuple[int, int]
) -> None:
    image = strip(*size)
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1

    checked = resize_lanczos(image, *grid, check)
    assert np.array_equal(checked, resize_lanczos(image, *grid))
    assert calls >= 2, calls  # before the first block and at least once during
    # About one call per 2**20 multiply-adds: a few dozen for an ordinary photo, not thousands.
    assert calls <= 2 + 2 * size[0] * size[1] * grid[0] // resample._CHECK_WORK + 64, calls


def test_an_unchecked_resize_never_calls_anything() -> None:
    pace = resample._Pacer(None)
    pace.before(10**12)  # no check: accounting only, nothing raised


def test_the_item_budget_stops_the_hash_inside_the_resize(
    long_strip: Image.Image, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Spent before the hash starts: before this check ran between blocks, the whole resize ran
    # and the budget was only looked at after it.
    made = count_blocks(monkeypatch)
    item = ExtractedImage(long_strip.copy(), "", "image", ItemBudget(0.0))
    item.budget.spent = 0.001
    with pytest.raises(TimeBudgetExceeded):
        _hash_item(item, "dhash64")
    assert made == []


def test_hash_image_passes_the_check_to_the_resize(long_strip: Image.Image) -> None:
    def check() -> None:
        raise Expired

    with pytest.raises(Expired):
        hash_image(long_strip, "dhash256", check)
    assert hash_image(strip(64, 48), "dhash64", lambda: None) == hash_image(strip(64, 48))
