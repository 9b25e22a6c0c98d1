"""The canary's judgement against a fixed-threshold gate and a Kayenta-style Mann-Whitney.

Streams of per-poll increments of both releases (extractions, failed extractions, hash-time
histogram), the same streams for all three judges:

* traffic: Poisson extractions per poll (``RATE`` per second over ``POLL_S`` polls), split by the
  step's weight (5 % → 25 % → 50 %, ``STEP_POLLS`` polls each, as ``JudgeConfig``'s steps);
* failures: each extraction fails with probability 2 % (``BASE_FAILURE``), binomially;
* hash times: resampled from real hash times, measured here once on this machine
  (``digest`` of deterministic sample photos at 640x480, 1280x960, 1920x1080 and 4000x3000,
  cached in bench/out/canary_hash_times.json), bucketed with the service's own buckets.

Scenarios: A/A (both releases identical, ``AA_STREAMS`` streams), a canary with +3 points of
failures (2 % → 5 %), a canary with +30 % hash time (every sample x1.3), and A/A with the load
halved from the middle of the run (a traffic dip).

Anchors, each calibrated on the same A/A streams to the sequential judge's measured false-abort
rate (the most generous tuning they can get: in production their thresholds are not tuned on
the answer):

* **fixed threshold** (the monitor's gate rule): the canary's failure rate over the trailing 10
  minutes and its P95 over the trailing 15 minutes (``histogram_quantile``'s interpolation), at
  least 10 samples, breaching for 2 polls in a row;
* **Mann-Whitney** (Kayenta's judge): at every poll, a one-sided Mann-Whitney U test of the
  canary's per-poll values against stable's (per-poll failure rate; per-poll P95), over all
  polls so far, abort when p < α' (α' calibrated).

Figures: false aborts, detection rate within the run, median polls to abort (detected streams).
"""

from __future__ import annotations

import io
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import mannwhitneyu

from dhash_rollout.canary.judge import (
    Action,
    JudgeConfig,
    Poll,
    ReleasePoll,
    Step,
    observe,
    start,
)
from dhash_rollout.canary.quantiles import Histogram
from dhash_rollout.monitor.promql import Bucket, bucket_quantile
from dhash_service.metrics import HASH_DURATION_BUCKETS

OUT = Path(__file__).resolve().parent / "out"

POLL_S = 30.0
STEP_POLLS = 10
STEPS = (Step(5, STEP_POLLS * POLL_S), Step(25, STEP_POLLS * POLL_S), Step(50, STEP_POLLS * POLL_S))
POLLS = STEP_POLLS * len(STEPS)
RATE = 4.0  # extractions per second over both releases
BASE_FAILURE = 0.02
AA_STREAMS = int(os.environ.get("CANARY_AA_STREAMS", "800"))
AB_STREAMS = int(os.environ.get("CANARY_AB_STREAMS", "200"))
BOUNDS = HASH_DURATION_BUCKETS
CONFIG = JudgeConfig(steps=STEPS, max_wait_seconds=STEP_POLLS * POLL_S)


# -- real hash times -------------------------------------------------------------------------


def measured_hash_times() -> np.ndarray:
    """Seconds per digest of real sample photos on this machine (measured once, cached)."""
    cache = OUT / "canary_hash_times.json"
    if cache.exists():
        return np.asarray(json.loads(cache.read_text())["seconds"])
    from dhash_rollout.samples import realistic_photo
    from dhash_service.digest import digest
    from dhash_service.extraction.limits import Limits

    sizes = [(640, 480)] * 60 + [(1280, 960)] * 40 + [(1920, 1080)] * 30 + [(4000, 3000)] * 6
    times: list[float] = []
    for seed, (w, h) in enumerate(sizes):
        buf = io.BytesIO()
        realistic_photo(w, h, seed).save(buf, "JPEG", quality=88)
        data = buf.getvalue()
        t0 = time.perf_counter()
        digest(data, limits=Limits())
        times.append(time.perf_counter() - t0)
    OUT.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"sizes": sizes, "seconds": times}))
    return np.asarray(times)


# -- streams ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    streams: int
    canary_failure: float = BASE_FAILURE
    canary_slowdown: float = 1.0
    dip_from: int | None = None  # the poll from which the load is halved


def stream(sc: Scenario, times: np.ndarray, rng: np.random.Generator) -> list[Poll]:
    polls: list[Poll] = []
    for i in range(POLLS):
        weight = STEPS[min(i // STEP_POLLS, len(STEPS) - 1)].weight / 100.0
        rate = RATE * (0.5 if sc.dip_from is not None and i >= sc.dip_from else 1.0)
        n_c = int(rng.poisson(rate * POLL_S * weight))
        n_s = int(rng.poisson(rate * POLL_S * (1.0 - weight)))
        f_c = int(rng.binomial(n_c, sc.canary_failure))
        f_s = int(rng.binomial(n_s, BASE_FAILURE))
        t_c = rng.choice(times, n_c) * sc.canary_slowdown
        t_s = rng.choice(times, n_s)
        polls.append(
            Poll(
                (i + 1) * POLL_S,
                ReleasePoll(n_c, f_c, Histogram.of(BOUNDS, t_c), healthy=True),
                ReleasePoll(n_s, f_s, Histogram.of(BOUNDS, t_s), healthy=True),
            )
        )
    return polls


# -- the three judges ------------------------------------------------------------------------


def sequential(polls: Sequence[Poll]) -> tuple[int | None, Action]:
    """The poll (1-based) at which the judge aborted, or None; and how the run ended."""
    state = start(CONFIG)
    last = Action.CONTINUE
    for i, p in enumerate(polls, 1):
        state, j = observe(state, p, CONFIG)
        last = j.action
        if j.action is Action.ABORT:
            return i, last
        if state.done is not None:
            break
    return None, last


def _p95(h: Histogram) -> float:
    cum = 0
    buckets = []
    for b, c in zip((*h.bounds, math.inf), h.counts, strict=True):
        cum += c
        buckets.append(Bucket(b, float(cum)))
    return bucket_quantile(0.95, buckets)


def threshold_series(polls: Sequence[Poll]) -> tuple[np.ndarray, np.ndarray]:
    """Per poll, the sustained (2 polls in a row) windowed failure rate and P95 of the canary."""
    fr, p95 = [], []
    for i in range(len(polls)):
        win_f = polls[max(0, i - 19) : i + 1]  # 10 minutes
        n = sum(p.canary.extractions for p in win_f)
        f = sum(p.canary.failures for p in win_f)
        fr.append(100.0 * f / n if n >= 10 else -math.inf)
        win_l = polls[max(0, i - 29) : i + 1]  # 15 minutes
        h = Histogram.empty(BOUNDS)
        for p in win_l:
            h = h.plus(p.canary.hash_times)
        p95.append(_p95(h) if h.total >= 10 else -math.inf)
    f_arr, l_arr = np.asarray(fr), np.asarray(p95)
    sustained = (np.minimum(f_arr[1:], f_arr[:-1]), np.minimum(l_arr[1:], l_arr[:-1]))
    return np.concatenate([[-math.inf], sustained[0]]), np.concatenate([[-math.inf], sustained[1]])


def mann_whitney_series(polls: Sequence[Poll]) -> tuple[np.ndarray, np.ndarray]:
    """Per poll, the one-sided Mann-Whitney p-values (canary greater) over all polls so far."""
    cf, sf, cl, sl = [], [], [], []
    pf, pl = [], []
    for p in polls:
        if p.canary.extractions and p.stable.extractions:
            cf.append(p.canary.failures / p.canary.extractions)
            sf.append(p.stable.failures / p.stable.extractions)
            cl.append(_p95(p.canary.hash_times))
            sl.append(_p95(p.stable.hash_times))
        if len(cf) >= 3:  # Kayenta needs a few points per side
            pf.append(float(mannwhitneyu(cf, sf, alternative="greater").pvalue))
            pl.append(float(mannwhitneyu(cl, sl, alternative="greater").pvalue))
        else:
            pf.append(1.0)
            pl.append(1.0)
    return np.asarray(pf), np.asarray(pl)


def first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) + 1 if hits.size else None


# -- calibration and figures -----------------------------------------------------------------


def calibrate(
    aa: list[tuple[np.ndarray, np.ndarray]], target: int, exceed: Callable[[float, float], float]
) -> float:
    """The loosest level of an anchor whose A/A aborts are at most ``target`` streams.

    ``aa`` holds each stream's two per-poll statistics; ``exceed(level, which)`` maps a level in
    [0, 1] to a per-check cut. Bisection on the level (aborts only grow with it)."""
    lo, hi = 0.0, 1.0
    for _ in range(40):
        mid = (lo + hi) / 2
        aborts = sum(1 for a, b in aa if (a > exceed(mid, 0)).any() or (b > exceed(mid, 1)).any())
        if aborts <= target:
            lo = mid
        else:
            hi = mid
    return lo


def summary(name: str, polls_to_abort: list[int | None]) -> str:
    """Aborts, the median poll of the aborted streams, and the median over every stream with a
    miss counted as never (``> POLLS``): the figure that compares judges of different power."""
    hits = [p for p in polls_to_abort if p is not None]
    rate = 100.0 * len(hits) / len(polls_to_abort)
    med = f"{statistics.median(hits):.1f}" if hits else "—"
    every = statistics.median_low([math.inf if p is None else p for p in polls_to_abort])
    every_s = f"> {POLLS}" if math.isinf(every) else f"{every}"
    return (
        f"{name}: {len(hits)}/{len(polls_to_abort)} aborted ({rate:.1f}%), median polls "
        f"{med} of the aborted, {every_s} over all"
    )


def main() -> None:
    t0 = time.time()
    times = measured_hash_times()
    print(
        f"hash times: {len(times)} measured, median {1000 * np.median(times):.1f} ms, "
        f"P95 {1000 * np.quantile(times, 0.95):.1f} ms"
    )
    seed = int(sys.argv[1]) if len(sys.argv) > 1 else 20261202
    rng = np.random.default_rng(seed)
    scenarios = [
        Scenario("A/A", AA_STREAMS),
        Scenario("A/A, load halved at poll 15", AB_STREAMS, dip_from=15),
        Scenario("failures +3 points", AB_STREAMS, canary_failure=BASE_FAILURE + 0.03),
        Scenario("hash time +30%", AB_STREAMS, canary_slowdown=1.3),
    ]
    data = {sc.name: [stream(sc, times, rng) for _ in range(sc.streams)] for sc in scenarios}
    print(
        f"seed {seed}; {POLLS} polls of {POLL_S:g} s, {RATE:g} extractions/s, steps "
        f"{[s.weight for s in STEPS]}%; streams generated in {time.time() - t0:.0f} s"
    )

    seq: dict[str, list[tuple[int | None, Action]]] = {}
    for name, streams in data.items():
        t1 = time.time()
        seq[name] = [sequential(s) for s in streams]
        per = 1000 * (time.time() - t1) / (len(streams) * POLLS)
        print(f"sequential judge on {name}: {per:.2f} ms per poll (upper bound: early stops)")
    aa_aborts = sum(1 for p, _ in seq["A/A"] if p is not None)
    print(
        f"\nsequential A/A false aborts: {aa_aborts}/{AA_STREAMS} "
        f"({100 * aa_aborts / AA_STREAMS:.2f}%; α = {CONFIG.alpha:g})"
    )
    ends = {a: sum(1 for _, e in seq["A/A"] if e is a) for a in Action}
    print(f"A/A endings: {ends}")
    target = aa_aborts

    thr = {n: [threshold_series(s) for s in st] for n, st in data.items()}
    mw = {n: [mann_whitney_series(s) for s in st] for n, st in data.items()}

    maxima = [np.array([s[k].max() for s in thr["A/A"]]) for k in (0, 1)]

    def thr_cut(level: float, k: int) -> float:
        return float(np.quantile(maxima[k], 1.0 - level))

    thr_level = calibrate(thr["A/A"], target, thr_cut)
    cuts = (thr_cut(thr_level, 0), thr_cut(thr_level, 1))

    def mw_cut(level: float, k: int) -> float:
        return -level  # abort when p < α', i.e. -p > -α'

    neg = [(-a, -b) for a, b in mw["A/A"]]
    mw_alpha = calibrate(neg, target, mw_cut)
    naive = sum(1 for a, b in mw["A/A"] if (a < 0.05).any() or (b < 0.05).any())
    print(
        f"fixed threshold calibrated to {target} A/A aborts: failure rate > {cuts[0]:.2f}%, "
        f"P95 > {1000 * cuts[1]:.1f} ms (2 polls in a row)"
    )
    print(
        f"Mann-Whitney calibrated to {target} A/A aborts: p < {mw_alpha:.2e} "
        f"(at p < 0.05 it aborts {naive}/{AA_STREAMS} A/A streams when run at every poll)"
    )

    print()
    for name in data:
        s_polls = [p for p, _ in seq[name]]
        t_polls = [first((a > cuts[0]) | (b > cuts[1])) for a, b in thr[name]]
        m_polls = [first((a < mw_alpha) | (b < mw_alpha)) for a, b in mw[name]]
        print(f"[{name}]")
        print("  " + summary("sequential     ", s_polls))
        print("  " + summary("fixed threshold", t_polls))
        print("  " + summary("Mann-Whitney   ", m_polls))
        if name.startswith("A/A"):
            promoted = sum(1 for _, e in seq[name] if e is Action.PROMOTE)
            print(f"  sequential promoted {promoted}/{len(seq[name])}")
    print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
