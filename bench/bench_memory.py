"""Memory given back after large requests (issue 11, item 10): a real worker's resident set
before, at its peak during, and 2 s after each of three 64-megapixel JPEGs, with the trim
(``dhash_service.memory``: ``malloc_trim`` after a request of >= 16 MP or >= 8 MiB) on and off.

Run with ``make bench-memory``.

A ``dhash serve --workers 1`` on SQLite in a temp dir receives three different 8000x8000 JPEGs
on ``POST /v1/hash`` (a full decode: 183 MB of RGB), one at a time, ``BENCH_ROUNDS`` (default 3)
times. The worker's RSS is read from ``/proc/<pid>/statm`` every 10 ms while a request runs
(peak), just before it (before) and 2 s after its answer (after). "Trim off" is the same code
with both thresholds raised past any request, by a ``sitecustomize`` on the worker's
``PYTHONPATH`` (the workers are spawned, so a patch in this process would not reach them). The
request budget is raised to 60 s so that a slow decode on a busy machine is still measured.
Medians over every request of a mode; the anchor is the worker's idle RSS in the same run.
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_service import TOKEN, serve_one_worker, server_env  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SIDE = 8000
PAGE = os.sysconf("SC_PAGE_SIZE")
TRIM_OFF = (
    "import dhash_service.memory as memory\n"
    "memory.TRIM_AFTER_PIXELS = 1 << 62\n"
    "memory.TRIM_AFTER_BYTES = 1 << 62\n"
)


def big_jpeg(seed: int) -> bytes:
    """A 64 MP photo-like JPEG: smooth colour gradients with grain (~10 MB)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIDE:8, 0:SIDE:8]
    small = np.stack(
        [(x * (seed + 1) % 256), (y * 3 % 256), ((x + y) * (seed + 2) % 256)], axis=-1
    ).astype(np.uint8)
    image = Image.fromarray(small).resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    pixels = np.asarray(image).astype(np.int16)
    pixels += rng.integers(-6, 7, pixels.shape, dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=85)
    return out.getvalue()


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def start(scratch: Path, trim: bool) -> tuple[subprocess.Popen[bytes], str]:
    env = server_env(f"sqlite:///{scratch / 'dhash.db'}", scratch)
    env["DHASH_REQUEST_TIME_BUDGET_SECONDS"] = "60"
    if not trim:
        site = scratch / "trim-off"
        site.mkdir()
        (site / "sitecustomize.py").write_text(TRIM_OFF)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    return serve_one_worker(env, scratch / "serve.log")


def one_request(url: str, pid: int, data: bytes) -> tuple[int, int, int]:
    """(before, peak, 2 s after) resident bytes of the worker around one upload."""
    before = rss(pid)
    peak = before
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss(pid))
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        response = httpx.post(
            f"{url}/v1/hash",
            files={"file": ("big.jpg", data)},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        )
    finally:
        done.set()
        sampler.join()
    if response.status_code != 200:
        raise SystemExit(f"upload answered {response.status_code}: {response.text[:200]}")
    time.sleep(2.0)
    return before, peak, rss(pid)


def run_mode(trim: bool, jpegs: list[bytes]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="dhash-bench-memory-") as tmp:
        process, url = start(Path(tmp), trim)
        try:
            pid = int(httpx.get(f"{url}/health").json()["pid"])
            idle = rss(pid)
            samples = [one_request(url, pid, data) for _ in range(ROUNDS) for data in jpegs]
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    mib = 1 / 2**20
    return {
        "idle": idle * mib,
        "before": statistics.median(s[0] for s in samples) * mib,
        "peak": statistics.median(s[1] for s in samples) * mib,
        "after": statistics.median(s[2] for s in samples) * mib,
        "after_max": max(s[2] for s in samples) * mib,
        "requests": len(samples),
    }


def main() -> None:
    jpegs = [big_jpeg(seed) for seed in range(3)]
    sizes = ", ".join(f"{len(j) / 2**20:.1f}" for j in jpegs)
    print(f"three {SIDE}x{SIDE} JPEGs ({sizes} MiB), {ROUNDS} rounds, POST /v1/hash, 1 worker")
    results = {"trim on": run_mode(True, jpegs), "trim off": run_mode(False, jpegs)}
    print(
        f"{'':<9} {'idle':>7} {'before':>7} {'peak':>7} {'2 s after':>9} {'max after':>9} "
        f"{'after/idle':>10}  (MiB, medians)"
    )
    for name, r in results.items():
        print(
            f"{name:<9} {r['idle']:7.0f} {r['before']:7.0f} {r['peak']:7.0f} {r['after']:9.0f} "
            f"{r['after_max']:9.0f} {r['after'] / r['idle']:10.2f}"
        )
    on, off = results["trim on"], results["trim off"]
    print(f"2 s after, trim off / trim on: {off['after'] / on['after']:.2f}x")


if __name__ == "__main__":
    main()
