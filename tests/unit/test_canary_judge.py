"""The canary's decision rules, case by case, on hand-made streams of per-poll increments."""

from __future__ import annotations

import pytest

from dhash_rollout.canary.judge import (
    Action,
    JudgeConfig,
    Poll,
    ReleasePoll,
    Step,
    observe,
    replay,
    start,
)
from dhash_rollout.canary.quantiles import Histogram

BOUNDS = (0.01, 0.02, 0.05, 0.1, 0.2)
STEPS = (Step(10, 300.0), Step(50, 300.0))
CONFIG = JudgeConfig(steps=STEPS, bounds=BOUNDS, max_wait_seconds=300.0, min_samples=10)
POLL_S = 30.0


def release(
    n: int, failures: int = 0, slow: bool = False, healthy: bool | None = True
) -> ReleasePoll:
    # the hash times of n extractions: half at or below 10 ms, the rest spread up to 50 ms,
    # or (slow) everything moved one to two buckets up
    if slow:
        counts = (0, 0, n // 2, n - n // 2 - n // 10, n // 10, 0)
    else:
        counts = (n // 2, n - n // 2 - n // 10, n // 10, 0, 0, 0)
    return ReleasePoll(n, failures, Histogram(BOUNDS, counts), healthy)


def run(polls: list[tuple[ReleasePoll, ReleasePoll]], config: JudgeConfig = CONFIG) -> list:
    return replay([Poll((i + 1) * POLL_S, c, s) for i, (c, s) in enumerate(polls)], config)


def healthy_polls(
    n: int, canary: int = 10, stable: int = 90
) -> list[tuple[ReleasePoll, ReleasePoll]]:
    return [
        (release(canary, 1 if canary and i % 5 == 0 else 0), release(stable, 1)) for i in range(n)
    ]


def test_a_canary_like_stable_advances_each_step_then_is_promoted() -> None:
    judgements = run(healthy_polls(40))
    actions = [j.action for j in judgements]
    assert actions[:9] == [Action.CONTINUE] * 9
    assert actions[9] is Action.ADVANCE  # 300 s at 10 %
    assert judgements[10].weight == 50
    assert actions[-1] is Action.PROMOTE and len(actions) == 20
    assert not any(e.worse for e in judgements[-1].evidence)


def test_failures_far_above_stables_abort_with_the_count_evidence() -> None:
    polls = [(release(10, 3), release(90, 1)) for _ in range(10)]
    judgements = run(polls)
    last = judgements[-1]
    assert last.action is Action.ABORT
    worse = {e.check for e in last.evidence if e.worse}
    assert "failures vs stable" in worse
    ev = next(e for e in last.evidence if e.check == "failures vs stable")
    assert ev.e_value is not None and ev.e_value >= 4 / CONFIG.alpha
    assert "canary" in last.reason and "rate ratio" in last.reason


def test_a_slower_canary_aborts_on_the_hash_time_check() -> None:
    polls = [(release(20, slow=True), release(80)) for _ in range(10)]
    last = run(polls)[-1]
    assert last.action is Action.ABORT
    assert [e.check for e in last.evidence if e.worse] == ["hash time vs stable"]


def test_failures_above_the_absolute_threshold_abort_even_when_stable_fails_as_much() -> None:
    config = JudgeConfig(steps=STEPS, bounds=BOUNDS, failure_rate_threshold_pct=5.0)
    polls = [(release(20, 6), release(80, 24)) for _ in range(10)]  # both 30 %
    last = run(polls, config)[-1]
    assert last.action is Action.ABORT
    assert [e.check for e in last.evidence if e.worse] == ["failures (canary alone)"]


def test_health_fails_after_more_non_ok_probes_in_a_row_than_the_threshold() -> None:
    down = release(10, healthy=False)
    polls = [(down, release(90)), (down, release(90)), (release(10), release(90))]
    polls += [(down, release(90))] * 3
    actions = [j.action for j in run(polls)]
    assert actions == [Action.CONTINUE] * 5 + [Action.ABORT]  # 2 tolerated, reset by an OK


def test_low_traffic_waits_then_is_inconclusive_never_a_pass_or_an_abort() -> None:
    judgements = run(healthy_polls(40, canary=0, stable=90))
    actions = [j.action for j in judgements]
    assert Action.ABORT not in actions and Action.ADVANCE not in actions
    assert actions[-1] is Action.INCONCLUSIVE
    assert len(actions) == 20  # the step's 300 s plus the bounded 300 s wait
    assert "waiting for samples" in judgements[12].reason
    assert "not a pass and not an abort" in judgements[-1].reason


def test_samples_arriving_during_the_wait_let_the_step_pass_late() -> None:
    polls = healthy_polls(12, canary=0) + healthy_polls(5, canary=10)
    judgements = run(polls)
    assert judgements[12].action is Action.ADVANCE  # the first poll with 10 canary samples


def test_a_traffic_dip_is_not_a_verdict() -> None:
    polls = healthy_polls(10) + healthy_polls(10, canary=5, stable=45)
    judgements = run(polls)
    assert [j.action for j in judgements][-1] is Action.PROMOTE


def test_a_finished_canary_stays_finished() -> None:
    state = start(CONFIG)
    polls = [Poll((i + 1) * POLL_S, release(10, 5), release(90)) for i in range(10)]
    for p in polls:
        state, _ = observe(state, p, CONFIG)
        if state.done:
            break
    assert state.done is Action.ABORT
    again, j2 = observe(state, polls[0], CONFIG)
    assert again is state and j2.action is Action.ABORT


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": ()}, "at least one step"),
        ({"steps": (Step(0, 60.0),)}, "percentage"),
        ({"steps": (Step(100, 60.0),)}, "percentage"),
        ({"steps": (Step(10, 0.0),)}, "time must be positive"),
        ({"alpha": 0.0}, "alpha"),
        ({"quantile": 0.4}, "quantile"),
    ],
)
def test_a_bad_config_is_refused_with_the_reason(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        JudgeConfig(**kwargs)  # type: ignore[arg-type]
