"""What checking the request budget inside the hash costs, and how soon it stops a long resize.

Run with ``make bench-hash-budget``.

1. **Overhead.** The same decoded 1920x1080 photo-like JPEG (grayscale, as the hash reads it)
   resized to the dhash64 and dhash256 grids, and hashed from its bytes (decode included), with
   no check and with the check ``digest`` passes (an ``ItemBudget`` under a ``RequestBudget``,
   neither spent). CPU of this thread (``time.thread_time``), calls alternating which goes first,
   medians of rounds; the ratio is checked / unchecked (the anchor is the unchecked call).
2. **Stop.** Strips up to Pillow's own ceiling (44,739,234 x 1) digested in process under a
   request budget of ``BUDGET`` s, the side limit raised to that ceiling: how long past the
   budget the answer came, the longest gap between two checks, the full resize's CPU for scale.

Prints the tables; figures are recorded by hand in bench/RESULTS.md. Bounded: fixed counts.
"""

from __future__ import annotations

import io
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.corpus import photo_jpeg  # noqa: E402
from tests.support.hostile import png_strip  # noqa: E402

from dhash_service.digest import digest  # noqa: E402
from dhash_service.errors import TimeBudgetExceeded  # noqa: E402
from dhash_service.extraction import Limits  # noqa: E402
from dhash_service.extraction.limits import (  # noqa: E402
    PILLOW_MAX_RESIZE_SIDE,
    ItemBudget,
    RequestBudget,
)
from dhash_service.hashing import hash_image  # noqa: E402
from dhash_service.hashing.resample import resize_lanczos  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "7"))
CALLS = 60  # per round and variant
BUDGET = 0.3
STRIPS = [(2_097_152, 30), (12_000_000, 1), (PILLOW_MAX_RESIZE_SIDE, 1)]


def budget_check() -> Callable[[], None]:
    """What ``digest`` passes: the item's check, which checks the request's too."""
    item = ItemBudget(3600.0, RequestBudget(3600.0))  # never spent here
    return item.check


def alternate(first: Callable[[], object], second: Callable[[], object]) -> tuple[float, float]:
    """Median over rounds of each one's mean thread CPU per call, calls alternating."""
    means: tuple[list[float], list[float]] = ([], [])
    for round_ in range(ROUNDS):
        spent = [0.0, 0.0]
        for n in range(CALLS):
            order = (0, 1) if (n + round_) % 2 == 0 else (1, 0)
            for which in order:
                started = time.thread_time()
                (first, second)[which]()
                spent[which] += time.thread_time() - started
        means[0].append(spent[0] / CALLS)
        means[1].append(spent[1] / CALLS)
    return statistics.median(means[0]), statistics.median(means[1])


def overhead() -> list[tuple[str, float, float, int]]:
    data = photo_jpeg(1920, 1080, 3)
    gray = Image.open(io.BytesIO(data)).convert("L")
    rows = []
    for name, grid in (("dhash64", (9, 8)), ("dhash256", (17, 16))):
        calls = 0

        def counting() -> None:
            nonlocal calls
            calls += 1

        assert np.array_equal(resize_lanczos(gray, *grid, counting), resize_lanczos(gray, *grid))
        check = budget_check()
        plain, checked = alternate(
            lambda grid=grid: resize_lanczos(gray, *grid),
            lambda grid=grid, check=check: resize_lanczos(gray, *grid, check),
        )
        rows.append((f"resize to {name}", plain, checked, calls))
        plain, checked = alternate(
            lambda name=name: hash_image(Image.open(io.BytesIO(data)), name),
            lambda name=name, check=check: hash_image(Image.open(io.BytesIO(data)), name, check),
        )
        rows.append((f"{name} from the JPEG bytes", plain, checked, calls))
    return rows


def stops() -> list[tuple[str, float, float, float]]:
    limits = Limits(max_image_side=PILLOW_MAX_RESIZE_SIDE)
    rows = []
    for width, height in STRIPS:
        image = Image.open(io.BytesIO(png_strip(width, height)))
        image.load()
        started = time.thread_time()
        resize_lanczos(image, 9, 8)
        full = time.thread_time() - started
        checks: list[float] = []
        data = png_strip(width, height)
        request = RequestBudget(BUDGET)
        begun = time.monotonic()
        try:
            digest(data, limits=limits, request=request)
            raise SystemExit(f"{width}x{height} hashed within {BUDGET} s: pick a longer strip")
        except TimeBudgetExceeded:
            answered = time.monotonic() - begun
        gap = _longest_gap(image, checks)
        rows.append((f"{width:,} x {height}", full, answered - BUDGET, gap))
    return rows


def _longest_gap(image: Image.Image, checks: list[float]) -> float:
    """The longest time between two checks of one whole resize (no budget to stop it)."""

    def check() -> None:
        checks.append(time.perf_counter())

    started = time.perf_counter()
    resize_lanczos(image, 9, 8, check)
    ended = time.perf_counter()
    return float(np.diff([started, *checks, ended]).max())


def main() -> None:
    print(f"load average at start: {os.getloadavg()[0]:.2f}; rounds {ROUNDS} x {CALLS} calls")
    print("\n| 1920x1080 JPEG | no check ms | checked ms | ratio | checks per call |")
    print("|---|---:|---:|---:|---:|")
    for name, plain, checked, calls in overhead():
        print(
            f"| {name} | {plain * 1000:.3f} | {checked * 1000:.3f} | {checked / plain:.3f} "
            f"| {calls} |"
        )
    print(
        f"\n| strip, budget {BUDGET} s | full resize CPU s | answered past the budget ms "
        "| longest gap between checks ms |"
    )
    print("|---|---:|---:|---:|")
    for name, full, late, gap in stops():
        print(f"| {name} | {full:.3f} | {late * 1000:.1f} | {gap * 1000:.1f} |")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
