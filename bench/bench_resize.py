"""Resize benchmark: the streamed-weights resize against the dense one it replaced, and the hash
against imagehash (the project's anchor), on ordinary and extreme shapes.

- ``old``: ``resize_lanczos`` as it was before the streamed weights (``git show REF:...``, default
  199ced1, main at the start of session 5), loaded as a module in this process;
- ``new``: ``dhash_service.hashing.resample.resize_lanczos`` of this checkout;
- ``imagehash``: ``imagehash.dhash(image)`` on the same grayscale image, against ``hash_image``.

Time: CPU seconds of this process (one core; products are kept single-threaded by both), medians
of interleaved rounds. Memory: the peak resident set added by one resize, each run in a fresh
child process (VmHWM after minus before, the mark reset first). Every shape is also checked to
give the same pixels old vs new, and the same hash as imagehash where Pillow can resize it
cheaply.

    .venv/bin/python bench/bench_resize.py [--rounds N] [--ref REF]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from dhash_service.hashing import hash_image
from dhash_service.hashing.resample import resize_lanczos

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_REF = "199ced1"
# (width, height, run the old one too): the old one at 12,000,000 x 1 took 47.6 s and 4.6 GB.
SHAPES = [
    (1920, 1080, True),
    (4000, 3000, True),
    (65_535, 976, True),
    (65_535, 1, True),
    (1_000_000, 1, True),
    (2_097_152, 30, False),
    (2_097_152, 1, False),
    (12_000_000, 1, False),
]
# imagehash through Pillow at 12,000,000 x 1 allocates ~0.6 GB of weights: not run there.
IMAGEHASH_MAX_SIDE = 2_097_152


def old_module(ref: str) -> types.ModuleType:
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:src/dhash_service/hashing/resample.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    spec = importlib.util.spec_from_loader("resample_old", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, "resample_old.py", "exec"), module.__dict__)
    return module


def noise(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 31 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))


def cpu(function: object, *args: object) -> float:
    started = time.process_time()
    function(*args)  # type: ignore[operator]
    return time.process_time() - started


def child(kind: str, width: int, height: int, ref: str) -> None:
    """Run one resize in this (fresh) process and print its peak resident set increase."""
    image = noise(width, height)
    resize = old_module(ref).resize_lanczos if kind == "old" else resize_lanczos
    # ru_maxrss survives exec (a child starts at its parent's peak), so reset the high-water
    # mark (``clear_refs`` 5) and read VmHWM around the resize.
    Path("/proc/self/clear_refs").write_text("5")
    before = high_water_kib()
    seconds = cpu(resize, image, 9, 8)
    after = high_water_kib()
    print(json.dumps({"mib": (after - before) / 1024, "seconds": seconds}))


def high_water_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise SystemExit("no VmHWM in /proc/self/status")


def peak(kind: str, width: int, height: int, ref: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(width), str(height), "--ref", ref],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, float] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ref", default=DEFAULT_REF)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        kind, width, height = args.child
        child(kind, int(width), int(height), args.ref)
        return
    old = old_module(args.ref)
    print(f"resize to 9x8, old = {args.ref}, CPU s medians of {args.rounds} interleaved rounds")
    print(
        f"{'shape':>14} {'old s':>8} {'new s':>8} {'old/new':>8} "
        f"{'old MiB':>8} {'new MiB':>8} {'same':>5} {'ih s':>8} {'hash s':>8} {'ih/hash':>8}"
    )
    for width, height, with_old in SHAPES:
        image = noise(width, height)
        rounds = args.rounds if width * height <= 20_000_000 and width < 5_000_000 else 1
        times: dict[str, list[float]] = {"old": [], "new": [], "ih": [], "hash": []}
        for _ in range(rounds):
            if with_old:
                times["old"].append(cpu(old.resize_lanczos, image, 9, 8))
            times["new"].append(cpu(resize_lanczos, image, 9, 8))
            if max(width, height) <= IMAGEHASH_MAX_SIDE:
                times["ih"].append(cpu(imagehash.dhash, image))
            times["hash"].append(cpu(hash_image, image))
        same = "-"
        if with_old:
            equal = np.array_equal(old.resize_lanczos(image, 9, 8), resize_lanczos(image, 9, 8))
            same = "yes" if equal else "NO"
        identical = (
            max(width, height) > IMAGEHASH_MAX_SIDE
            or str(imagehash.dhash(image)) == hash_image(image).hex()
        )
        memory_new = peak("new", width, height, args.ref)["mib"]
        memory_old = peak("old", width, height, args.ref)["mib"] if with_old else float("nan")
        med = {k: statistics.median(v) if v else float("nan") for k, v in times.items()}
        print(
            f"{f'{width}x{height}':>14} {med['old']:8.3f} {med['new']:8.3f} "
            f"{med['old'] / med['new']:8.2f} {memory_old:8.0f} {memory_new:8.0f} {same:>5} "
            f"{med['ih']:8.3f} {med['hash']:8.3f} {med['ih'] / med['hash']:8.2f}"
            + ("" if identical else "  hash differs from imagehash!")
        )
    print("old/new > 1: the new resize is faster; ih/hash > 1: hash_image is faster than imagehash")


if __name__ == "__main__":
    main()
