"""The resize makes each output's weights in blocks, never the dense long side x grid matrix.

Past ``_DENSE_MAX_SIDE`` a pass streams its weights (``_streamed_products``); below it the dense
matrix is built from the same blocks. Both must stay Pillow's pixels and today's hashes: the
hashes below were computed before the change (main at 199ced1, dense weights throughout), on
random pixels, for ordinary and extreme shapes, and each is checked through both paths.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from dhash_service.hashing import hash_image, resample
from dhash_service.hashing.resample import resize_lanczos

# (width, height): (dhash64, dhash256) as main computed them before the streamed weights.
EXPECTED = {
    (1920, 1080): (
        "9281021404480410",
        "8b31c24ca004110a996a01098a24c930a05a8d3224021242144124a8c210422a",
    ),
    (1080, 1920): (
        "1404aa900422a428",
        "910022a92252293884a550c444444722412104420a52488925100501d21208a8",
    ),
    (640, 480): (
        "04a264aca10c6c44",
        "544504a944b12e28a64594714eac4cca46452495a512a5725c649a522eba9932",
    ),
    (333, 187): (
        "a25aa490952c5569",
        "4e8c894d9949d949d2505c9245b9a7b1a6b3c72aca695aa4d6b7a7ab954a5892",
    ),
    (9, 8): (
        "556a6b6b11735ab1",
        "3333307f1cce0ccc1cdc1c5e3c4f3847038387031f071f8f19cc19cfcfc7cf27",
    ),
    (1, 1): (
        "0000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ),
    (5, 3): (
        "c4c4c4ccccecfcfc",
        "7870f870f870f870f870f870f870f870f860f8e0f8e0f8e0fce0ffe0ffe0ffe0",
    ),
    (24, 1): (
        "eeeeeeeeeeeeeeee",
        "5ced5ced5ced5ced5ced5ced5ced5ced5ced5ced5ced5ced5ced5ced5ced5ced",
    ),
    (1, 24): (
        "0000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ),
    (641, 1289): (
        "8a09155491240501",
        "54d6410908ca8369a34b255a16250a4c92b6cd922693955828325b335288a697",
    ),
    (1289, 641): (
        "0a2a444484880920",
        "12c6411a492a244e2c64942a34a8289254712a20a9020ac068d195648a116c0a",
    ),
    (6400, 48): (
        "69599230b2842d29",
        "688a1b26b9d6c22da3a42458b4912b14ab49621ac4a2b2a514298cea8dc43442",
    ),
    (48, 6400): (
        "526449c8c4631389",
        "a92abd9add11885a38925a25e3637064d154d033272d34ce848a9215d30ca8a6",
    ),
    (65535, 1): (
        "8484848484848484",
        "4a9a4a9a4a9a4a9a4a9a4a9a4a9a4a9a4a9a4a9a4a9a4a9a4a9a4a9a4a9a4a9a",
    ),
    (1, 65535): (
        "0000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ),
    (65535, 3): (
        "0202020000242424",
        "2654265426542654264424446444644464446444144406549654965496549654",
    ),
    (3, 65535): (
        "1850400004005020",
        "002004000a400000100000000000000000a90400000008000a40140096000020",
    ),
    (40, 65535): (
        "02a4106224202409",
        "2a4428248210a61302a124a236890688110884212a15510104259041a8848844",
    ),
    (65535, 40): (
        "2424018288080222",
        "021244510d9304928422221320528214912554d8216022422a44924925042414",
    ),
    (100000, 1): (
        "a4a4a4a4a4a4a4a4",
        "4970497049704970497049704970497049704970497049704970497049704970",
    ),
    (1, 100000): (
        "0000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
    ),
    (300000, 2): (
        "8484848448484848",
        "4091409140914091409140914091409190429042904290429042904290429042",
    ),
    (2, 300000): (
        "1000000000100000",
        "0100010000000000000000000000000000000000010001000000000000000000",
    ),
}


def noise(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 7919 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))


def pillow(image: Image.Image, width: int, height: int) -> np.ndarray:
    return np.asarray(image.resize((width, height), Image.Resampling.LANCZOS))


def hashes(image: Image.Image) -> tuple[str, str]:
    return hash_image(image, "dhash64").hex(), hash_image(image, "dhash256").hex()


@pytest.mark.parametrize("size", list(EXPECTED))
def test_hashes_are_the_ones_computed_before_the_streamed_weights(size: tuple[int, int]) -> None:
    assert hashes(noise(*size)) == EXPECTED[size]


@pytest.mark.parametrize("size", [s for s in EXPECTED if s[0] * s[1] <= 2_000_000])
def test_streamed_weights_give_the_same_hashes_at_every_size(
    size: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every pass streamed, in blocks of 1,000 weights (so windows span several blocks).
    monkeypatch.setattr(resample, "_DENSE_MAX_SIDE", 0)
    monkeypatch.setattr(resample, "_TAPS", 1000)
    assert hashes(noise(*size)) == EXPECTED[size]


@pytest.mark.parametrize("taps", [13, 1 << 16])
@pytest.mark.parametrize("kept", [0, 1 << 22])
def test_any_block_size_kept_or_recomputed_matches_pillow(
    taps: int, kept: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resample, "_DENSE_MAX_SIDE", 0)
    monkeypatch.setattr(resample, "_TAPS", taps)
    monkeypatch.setattr(resample, "_KEPT_TAPS", kept)
    for size in [(1, 1), (9, 8), (37, 600), (600, 37), (301, 1), (1, 301), (2000, 3)]:
        image = noise(*size)
        for grid in [(9, 8), (17, 16)]:
            assert np.array_equal(resize_lanczos(image, *grid), pillow(image, *grid)), size


@pytest.mark.parametrize("kept", [0, 1 << 22])
def test_the_c_library_path_for_weights_near_a_tie_matches_pillow(
    kept: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tie band of 1 makes every window doubtful: all of them take the math.sin path.
    monkeypatch.setattr(resample, "_DENSE_MAX_SIDE", 0)
    monkeypatch.setattr(resample, "_TIE_BAND", 1.0)
    monkeypatch.setattr(resample, "_KEPT_TAPS", kept)
    taken: list[bool] = []
    real = resample._Window.iter_fixed

    def spy(window: resample._Window, exact: bool = False, pace=None):  # type: ignore[no-untyped-def]
        taken.append(exact)
        return real(window, exact, pace)

    monkeypatch.setattr(resample._Window, "iter_fixed", spy)
    for size in [(640, 480), (5, 3), (1, 400), (3000, 2)]:
        image = noise(*size)
        assert np.array_equal(resize_lanczos(image, 9, 8), pillow(image, 9, 8)), size
    assert True in taken


def test_a_million_pixel_strip_matches_pillow_in_a_few_megabytes() -> None:
    image = noise(1_000_000, 1)
    tracemalloc.start()
    try:
        got = resize_lanczos(image, 9, 8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert np.array_equal(got, pillow(image, 9, 8))
    # The dense weights alone were 1,000,000 x 9 x 8 bytes = 72 MB (and ~40x that to make them).
    assert peak < 24 * 2**20, peak


@pytest.mark.parametrize(
    ("in_size", "out_size", "windows"),
    [
        # Pillow: center = (j + 0.5) * scale, support = 3 * max(scale, 1),
        # xmin = max((int)(center - support + 0.5), 0),
        # xmax = min((int)(center + support + 0.5), in)
        # 18 -> 9: scale 2, support 6; output 3: center 7, xmin (int)1.5 = 1, xmax (int)13.5 = 13
        (18, 9, [(0, 7), (0, 9), (0, 11), (1, 12), (3, 12), (5, 12), (7, 11), (9, 9), (11, 7)]),
        (1, 8, [(0, 1)] * 8),  # upscaling one pixel: support 3 clipped to the one input
        (2, 1, [(0, 2)]),
        # scale 1: a window of 7 clipped at both edges
        (10, 10, [(0, 4), (0, 5), (0, 6), (1, 6), (2, 6), (3, 6), (4, 6), (5, 5), (6, 4), (7, 3)]),
    ],
)
def test_each_output_reads_pillows_window(
    in_size: int, out_size: int, windows: list[tuple[int, int]]
) -> None:
    assert [(w.start, w.count) for w in resample._windows(in_size, out_size)] == windows


HALF_OF_18_TO_9 = [15473, 63150, -142601, -279497, 568350, 1872276]


@pytest.mark.parametrize(
    ("in_size", "out_size", "column", "fixed"),
    [
        (1, 8, 3, [1 << 22]),  # one source pixel: all of it
        (2, 1, 0, [1 << 21, 1 << 21]),  # symmetric pair: half each, exactly
        # centred at 9 on taps 3..14: symmetric, and summing to 2**22 - 2 after rounding
        (
            18,
            9,
            4,
            HALF_OF_18_TO_9 + HALF_OF_18_TO_9[::-1],
        ),
    ],
)
def test_fixed_point_weights_of_tiny_windows(
    in_size: int, out_size: int, column: int, fixed: list[int]
) -> None:
    window = resample._windows(in_size, out_size)[column]
    blocks = window.fixed_blocks()
    assert [int(v) for _, block in blocks for v in block] == fixed
    assert blocks[0][0] == window.start


@pytest.mark.parametrize(
    ("sums", "wrapped"),
    [
        ([100.0, -5.0], [100.0, -5.0]),  # in range: untouched
        ([2.0**31, 2.0**31 + 7], [-(2.0**31), -(2.0**31) + 7]),  # past INT_MAX: wraps as C
        ([-(2.0**31) - 1, 2.0**32 + 3], [2.0**31 - 1, 3.0]),
    ],
)
def test_sums_wrap_like_pillows_c_int(sums: list[float], wrapped: list[float]) -> None:
    values = np.array(sums)
    resample._wrap_like_int32(values)
    assert values.tolist() == wrapped
