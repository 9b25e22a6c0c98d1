"""Rollout timings: installing a release (full vs shared dependencies) and the zero-downtime switch.

Anchor: a *full* release install (the wheel and every dependency in the release's own venv).
Contender: a *shared* install (the wheel only, dependencies layered from the toolkit's env).
Both install the same wheel, interleaved, into fresh roots; medians and the ratio are printed.

Then the switch: one real supervisord-run environment on loopback, alternating two releases
under a 3-thread load (fresh connection per request), timing each activation and counting the
requests that failed during it.

    .venv/bin/python bench/bench_rollout.py [--reps 3] [--switches 6]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.load import LoadGenerator
from tests.support.release_builds import dhash_env, wheel_for, write_environments

from dhash_rollout.environments import load_environment
from dhash_rollout.releases import ReleaseSource, install_release
from dhash_rollout.runs.schema import migrate_with
from dhash_rollout.targets.local import LocalTarget


def bench_install(reps: int, work: Path) -> None:
    wheel = ReleaseSource("wheel", str(wheel_for("1.0.0")))
    times: dict[str, list[float]] = {"full": [], "shared": []}
    sizes: dict[str, int] = {}
    for rep in range(reps):
        order = ("full", "shared") if rep % 2 == 0 else ("shared", "full")
        for mode in order:
            root = work / f"{mode}-{rep}"
            began = time.perf_counter()
            release = install_release(root, wheel, deps=mode)  # type: ignore[arg-type]
            times[mode].append(time.perf_counter() - began)
            sizes[mode] = sum(f.stat().st_size for f in release.path.rglob("*") if f.is_file())
            shutil.rmtree(root)
    full, shared = statistics.median(times["full"]), statistics.median(times["shared"])
    print("| install | median s | size MB | vs full |")
    print("|---|---:|---:|---:|")
    print(f"| full (anchor) | {full:.2f} | {sizes['full'] / 1e6:.0f} | 1.00 |")
    print(
        f"| shared | {shared:.2f} | {sizes['shared'] / 1e6:.2f} | **{full / shared:.1f}x faster** |"
    )
    print(f"({reps} interleaved repetitions each, warm pip cache)")


def bench_switch(switches: int, work: Path) -> None:
    base = work / "site"
    base.mkdir()
    write_environments(base, api_token="bench-token")
    os.environ.update(dhash_env(base))
    env = load_environment("production", base)
    target = LocalTarget(env)
    try:
        for version in ("1.0.0", "2.0.0"):
            target.install(ReleaseSource("wheel", str(wheel_for(version))))
        first = target.release("1.0.0")
        assert first is not None
        migrate_with(first, env, base, None)
        target.activate("1.0.0")
        durations, failed, steered = [], [], 0
        started = time.monotonic()
        with LoadGenerator(env.port, "bench-token", threads=3, max_seconds=60) as load:
            time.sleep(1)
            for n in range(switches):
                before = load.result.failed
                began = time.perf_counter()
                activation = target.activate(("2.0.0", "1.0.0")[n % 2])
                durations.append(time.perf_counter() - began)
                failed.append(load.result.failed - before)
                steered += activation.steered
            time.sleep(1)
            covered = time.monotonic() - started < 60
        result = load.result
        if not covered:
            print("warning: the load stopped before the last switch ended; use fewer switches")
        print()
        print("| switches | median switch s | max s | requests | failed | steered |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {switches} | {statistics.median(durations):.2f} | {max(durations):.2f} "
            f"| {result.requests} | {sum(failed)} | {steered}/{switches} |"
        )
        print(f"(load: 3 threads, {result.seconds:.0f} s, statuses {dict(result.statuses)})")
    finally:
        target.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--switches", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dhash-bench-rollout-") as tmp:
        print(f"load average at start: {os.getloadavg()}")
        bench_install(args.reps, Path(tmp))
        bench_switch(args.switches, Path(tmp))
        print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
