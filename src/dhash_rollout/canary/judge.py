"""The canary's judgement: one poll of both releases in, the evidence and the decision out.

Pure (no clock, no I/O), so the controller, ``dhash canary status``, the tests and
``make bench-canary`` run the same rules. Every poll brings each release's *increments* since
the previous poll (extractions, failed extractions, hash-time histogram buckets, a health probe),
read from each release's own ``/metrics`` over the same minutes of the same traffic.

Checks, each with a share of the false-abort budget α (union bound, so the whole canary, every
poll of every step, aborts a release as good as stable with probability at most α):

=========================  ======  ===============================================================
check                      α share  aborts when
=========================  ======  ===============================================================
failures vs stable         α/4     the failure-rate ratio test rejects ``r ≤ margin``
                                   (:mod:`~dhash_rollout.canary.counts`, Lindon & Malek 2022)
hash time vs stable        α/4     the canary's share of hash times above stable's P50, P75 or
                                   P95 is higher than stable's (the quantile-shift test of
                                   :mod:`~dhash_rollout.canary.quantiles`)
failures (canary alone)    α/4     the canary's failure rate is above the gate's threshold
P95 (canary alone)         α/4     the canary's P95 lower bound (Howard & Ramdas 2022) is at or
                                   above the gate's threshold
health (canary alone)      —       more consecutive non-OK probes than the gate's threshold
=========================  ======  ===============================================================

A step advances (or, at the last step, the canary is promoted) once it has run its time *and*
each release saw at least ``min_samples`` extractions in it. Low traffic is not a verdict: past
the step's time the step waits up to ``max_wait_seconds`` for the samples, then is
INCONCLUSIVE: the canary holds where it is, neither promoted nor aborted, for an operator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from dhash_rollout.canary.counts import RateRatioTest
from dhash_rollout.canary.mixture import DEFAULT_CONCENTRATION, grid, log_e_value
from dhash_rollout.canary.quantiles import Histogram, QuantileShiftTest, compare, lower_bound
from dhash_service.metrics import HASH_DURATION_BUCKETS


class Action(StrEnum):
    CONTINUE = "continue"  # keep watching at this weight
    ADVANCE = "advance"  # this step passed: go to the next weight
    PROMOTE = "promote"  # the last step passed: the candidate becomes stable
    ABORT = "abort"  # the candidate is worse: stop it, stable untouched
    INCONCLUSIVE = "inconclusive"  # too little traffic to judge: hold for an operator


TERMINAL = frozenset({Action.PROMOTE, Action.ABORT, Action.INCONCLUSIVE})


@dataclass(frozen=True)
class Step:
    weight: float  # percent of new connections sent to the canary
    seconds: float  # the least time analysed at this weight


@dataclass(frozen=True)
class JudgeConfig:
    steps: tuple[Step, ...] = (Step(5, 300.0), Step(25, 300.0), Step(50, 300.0))
    alpha: float = 0.05
    bounds: tuple[float, ...] = HASH_DURATION_BUCKETS
    quantile: float = 0.95
    failure_margin: float = 1.0  # the failure-rate ratio tolerated (1: no worse than stable)
    latency_margin: float = 1.0  # the ratio of slow-hash shares tolerated
    min_samples: int = 10  # extractions per release per step before a step may pass
    max_wait_seconds: float = 600.0
    health_threshold: int = 2
    failure_rate_threshold_pct: float | None = 5.0  # the canary gates' absolute thresholds
    p95_threshold_ms: float | None = 2000.0
    concentration: float = DEFAULT_CONCENTRATION

    def __post_init__(self) -> None:
        if not self.steps:
            raise ValueError("a canary needs at least one step")
        for s in self.steps:
            if not 0.0 < s.weight < 100.0:
                raise ValueError(f"a step's weight is a percentage in (0, 100), got {s.weight}")
            if s.seconds <= 0:
                raise ValueError(f"a step's time must be positive, got {s.seconds}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0.5 < self.quantile < 1.0:
            raise ValueError(f"the latency quantile must be in (0.5, 1), got {self.quantile}")

    @property
    def check_alpha(self) -> float:
        return self.alpha / 4.0


@dataclass(frozen=True)
class ReleasePoll:
    """One release's increments since the previous poll."""

    extractions: int
    failures: int
    hash_times: Histogram
    healthy: bool | None = None  # None: not probed at this poll


@dataclass(frozen=True)
class Poll:
    at: float  # seconds since the canary started
    canary: ReleasePoll
    stable: ReleasePoll


@dataclass(frozen=True)
class Evidence:
    check: str
    worse: bool
    e_value: float | None  # the test's e-value (abort at 1/α of its share), when it has one
    detail: str


@dataclass(frozen=True)
class Judgement:
    action: Action
    step: int  # index into the steps
    weight: float
    reason: str
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class JudgeState:
    failures: RateRatioTest
    latency: QuantileShiftTest
    canary_times: Histogram
    stable_times: Histogram
    step: int = 0
    step_started: float = 0.0
    step_canary_samples: int = 0
    step_stable_samples: int = 0
    health_run: int = 0
    polls: int = 0
    done: Action | None = None
    last: Judgement | None = field(default=None, compare=False)


def start(config: JudgeConfig, at: float = 0.0) -> JudgeState:
    return JudgeState(
        failures=RateRatioTest.start(
            config.steps[0].weight / 100.0, config.failure_margin, config.concentration
        ),
        latency=QuantileShiftTest.start(
            config.bounds,
            config.steps[0].weight / 100.0,
            config.latency_margin,
            concentration=config.concentration,
        ),
        canary_times=Histogram.empty(config.bounds),
        stable_times=Histogram.empty(config.bounds),
        step_started=at,
    )


def _e(log_e: float) -> float:
    return math.exp(min(log_e, 700.0))


def _pct(part: int, whole: int) -> str:
    return f"{part}/{whole} ({100.0 * part / whole:.2f}%)" if whole else f"{part}/0"


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{1000.0 * seconds:g} ms"


def evidence(state: JudgeState, config: JudgeConfig) -> tuple[Evidence, ...]:
    """Every check on the evidence so far (the whole canary, all steps)."""
    a = config.check_alpha
    need = math.log(1.0 / a)
    f = state.failures
    out: list[Evidence] = []

    ratio = f.ratio_estimate
    out.append(
        Evidence(
            "failures vs stable",
            f.log_e_value >= need,
            _e(f.log_e_value),
            f"canary {_pct(f.canary_failures, f.canary_exposure)}, stable "
            f"{_pct(f.stable_failures, f.stable_exposure)}, rate ratio "
            f"{'—' if ratio is None else f'{ratio:.2f}'} (abort when e ≥ {1 / a:g})",
        )
    )

    lat = state.latency
    cmp = compare(
        state.canary_times,
        state.stable_times,
        config.quantile,
        a,
        concentration=config.concentration,
    )
    q = f"P{round(100 * config.quantile)}"
    levels = ", ".join(
        f"above {_ms(x)} (stable's P{round(100 * lv)}): canary "
        f"{_pct(t.canary_failures, t.canary_exposure)}, stable "
        f"{_pct(t.stable_failures, t.stable_exposure)}"
        for lv, t, x in zip(lat.levels, lat.tests, lat.thresholds, strict=True)
    )
    out.append(
        Evidence(
            "hash time vs stable",
            lat.log_e_value >= need,
            _e(lat.log_e_value),
            f"{levels}; {q} bounds: canary > {_ms(cmp.canary_lower)}, stable ≤ "
            f"{_ms(cmp.stable_upper)} (abort when e ≥ {1 / a:g})",
        )
    )

    if config.failure_rate_threshold_pct is not None:
        g = grid(config.failure_rate_threshold_pct / 100.0, config.concentration)
        le = log_e_value(g, f.canary_failures, f.canary_exposure - f.canary_failures)
        out.append(
            Evidence(
                "failures (canary alone)",
                le >= need,
                _e(le),
                f"canary {_pct(f.canary_failures, f.canary_exposure)} against the threshold "
                f"{config.failure_rate_threshold_pct:g}% (abort when e ≥ {1 / a:g})",
            )
        )
    if config.p95_threshold_ms is not None:
        lo = lower_bound(state.canary_times, config.quantile, a, config.concentration)
        limit = config.p95_threshold_ms / 1000.0
        out.append(
            Evidence(
                f"{q} (canary alone)",
                lo is not None and lo >= limit,
                None,
                f"canary {q} > {_ms(lo)} against the threshold {config.p95_threshold_ms:g} ms",
            )
        )
    out.append(
        Evidence(
            "health (canary alone)",
            state.health_run > config.health_threshold,
            None,
            f"{state.health_run} consecutive non-OK probes (abort above {config.health_threshold})",
        )
    )
    return tuple(out)


def observe(state: JudgeState, poll: Poll, config: JudgeConfig) -> tuple[JudgeState, Judgement]:
    """Take one poll; the new state and what to do now. A finished canary stays finished."""
    if state.done is not None and state.last is not None:
        return state, state.last
    c, s = poll.canary, poll.stable
    health_run = state.health_run
    if c.healthy is False:
        health_run += 1
    elif c.healthy is True:
        health_run = 0
    st = replace(
        state,
        failures=state.failures.update(c.failures, c.extractions, s.failures, s.extractions),
        latency=state.latency.update(c.hash_times, s.hash_times),
        canary_times=state.canary_times.plus(c.hash_times),
        stable_times=state.stable_times.plus(s.hash_times),
        step_canary_samples=state.step_canary_samples + c.extractions,
        step_stable_samples=state.step_stable_samples + s.extractions,
        health_run=health_run,
        polls=state.polls + 1,
    )
    ev = evidence(st, config)
    step = config.steps[st.step]
    worse = [e for e in ev if e.worse]
    elapsed = poll.at - st.step_started
    enough = min(st.step_canary_samples, st.step_stable_samples) >= config.min_samples

    if worse:
        action = Action.ABORT
        reason = "; ".join(f"{e.check}: {e.detail}" for e in worse)
    elif elapsed < step.seconds:
        action, reason = Action.CONTINUE, f"step {st.step + 1} at {step.weight:g}%: watching"
    elif enough:
        last = st.step == len(config.steps) - 1
        action = Action.PROMOTE if last else Action.ADVANCE
        reason = (
            f"step {st.step + 1} at {step.weight:g}% passed after {elapsed:.0f} s "
            f"({st.step_canary_samples} canary / {st.step_stable_samples} stable extractions)"
        )
    elif elapsed < step.seconds + config.max_wait_seconds:
        action = Action.CONTINUE
        reason = (
            f"step {st.step + 1}: waiting for samples ({st.step_canary_samples} canary / "
            f"{st.step_stable_samples} stable, {config.min_samples} needed)"
        )
    else:
        action = Action.INCONCLUSIVE
        reason = (
            f"step {st.step + 1} at {step.weight:g}%: only {st.step_canary_samples} canary / "
            f"{st.step_stable_samples} stable extractions in {elapsed:.0f} s "
            f"({config.min_samples} needed): holding, not a pass and not an abort"
        )
    judgement = Judgement(action, st.step, step.weight, reason, ev)
    if action is Action.ADVANCE:
        st = replace(
            st,
            step=st.step + 1,
            step_started=poll.at,
            step_canary_samples=0,
            step_stable_samples=0,
        )
    elif action in TERMINAL:
        st = replace(st, done=action)
    return replace(st, last=judgement), judgement


def replay(polls: Sequence[Poll], config: JudgeConfig, started: float = 0.0) -> list[Judgement]:
    """Every judgement a run of polls gives, up to the first final one (``dhash canary
    status``, the tests, the bench)."""
    state = start(config, started)
    out: list[Judgement] = []
    for p in polls:
        state, j = observe(state, p, config)
        out.append(j)
        if state.done is not None:
            break
    return out
