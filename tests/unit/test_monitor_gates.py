"""Gate rules as case tables: sustained breaches fail, one bad poll does not, no data, errors."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from dhash_rollout.monitor.gates import (
    GateState,
    Measurement,
    Status,
    conclude,
    step,
)
from dhash_rollout.monitor.gates_config import Gate, GateName
from dhash_rollout.runs.monitoring import Verdict

RATE = GateName.EXTRACTION_FAILURE_RATE
HEALTH = GateName.HEALTH_FAILURES
QUEUE = GateName.LOW_CONFIDENCE_QUEUE


def gate(**kw: object) -> Gate:
    data: dict[str, object] = {"threshold": 5.0, "warn": 3.0}
    data.update(kw)
    return Gate.model_validate(data)


def run(
    name: GateName, g: Gate, values: Sequence[float | str | None], *, samples: int = 100,
    interval: float = 30.0, window: float = 600.0, limit: int = 4,
) -> tuple[GateState, list[Status]]:  # fmt: skip
    state = GateState()
    statuses = []
    for i, v in enumerate(values):
        m = Measurement(None, error=v) if isinstance(v, str) else Measurement(v, samples=samples)
        state, ev = step(name, g, state, m, at=(i + 1) * interval, counting_window_s=window,
                         error_limit=limit)  # fmt: skip
        statuses.append(ev.status)
    return state, statuses


OK, WARN, BREACH, FAIL = Status.OK, Status.WARN, Status.BREACH, Status.FAIL
NO_DATA, ERROR = Status.NO_DATA, Status.ERROR


@pytest.mark.parametrize(
    ("g", "values", "expected"),
    [
        (gate(counting="window"), [1.0, 2.0], [OK, OK]),
        (gate(counting="window"), [4.0], [WARN]),
        (gate(counting="window"), [9.0, 1.0, 1.0], [BREACH, OK, OK]),  # one bad poll: no fail
        (gate(counting="window"), [9.0, 9.0], [BREACH, FAIL]),  # sustained: the second poll
        (gate(counting="window"), [9.0, 1.0, 9.0], [BREACH, OK, FAIL]),  # two within 600 s
        (gate(counting="consecutive"), [9.0, 1.0, 9.0], [BREACH, OK, BREACH]),
        (gate(counting="consecutive", sustainPolls=3), [9.0, 9.0, 9.0], [BREACH, BREACH, FAIL]),
        (gate(counting="window"), [5.0], [WARN]),  # at the threshold is not above it
    ],
)
def test_a_breach_fails_only_when_sustained(
    g: Gate, values: list[float], expected: list[Status]
) -> None:
    assert run(RATE, g, values)[1] == expected


def test_window_counting_forgets_breaches_older_than_the_window() -> None:
    statuses = run(RATE, gate(counting="window"), [9.0, 1.0, 1.0, 9.0], window=60.0)[1]
    assert statuses == [BREACH, OK, OK, BREACH]


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ([1, 1, 0, 1, 1], [OK, WARN, OK, OK, WARN]),  # 2 in a row is not > threshold 2
        ([1, 1, 1], [OK, WARN, FAIL]),  # the third consecutive non-OK check fails
    ],
)
def test_health_counts_consecutive_non_ok_checks(
    checks: list[float], expected: list[Status]
) -> None:
    g = gate(threshold=2, warn=1, counting="consecutive", noData="fail")
    assert run(HEALTH, g, checks, samples=1)[1] == expected


@pytest.mark.parametrize(
    ("policy", "expected_statuses", "verdict"),
    [
        ("fail", [BREACH, FAIL], Verdict.FAILED),
        ("inconclusive", [NO_DATA, NO_DATA], Verdict.INCONCLUSIVE),
        ("ignore", [NO_DATA, NO_DATA], Verdict.PASSED),
    ],
)
def test_no_data_follows_the_policy(
    policy: str, expected_statuses: list[Status], verdict: Verdict
) -> None:
    g = gate(noData=policy, minSamples=20, counting="window")
    state, statuses = run(RATE, g, [1.0, 1.0], samples=3)  # 3 samples < minSamples 20
    assert statuses == expected_statuses
    assert conclude([(RATE, g)], {RATE: state}).verdict is verdict


def test_inconclusive_fails_when_the_environment_says_so() -> None:
    g = gate(minSamples=20)
    state, _ = run(RATE, g, [1.0], samples=0)
    assert conclude([(RATE, g)], {RATE: state}, inconclusive_fails=True).verdict is Verdict.FAILED


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["down"] * 4, [ERROR] * 4),
        (["down"] * 5, [ERROR] * 4 + [FAIL]),  # more than 4 in a row
        (["down", "down", 1.0, "down", "down", "down"], [ERROR, ERROR, OK, ERROR, ERROR, ERROR]),
    ],
)
def test_source_errors_fail_after_the_limit(
    values: list[float | str], expected: list[Status]
) -> None:
    assert run(QUEUE, gate(threshold=1000, warn=800), values)[1] == expected


def test_an_error_at_the_end_is_never_a_pass() -> None:
    g = gate()
    state, _ = run(RATE, g, [1.0, "garbage"])
    assert conclude([(RATE, g)], {RATE: state}).verdict is Verdict.INCONCLUSIVE


def test_warn_is_noticed_once_per_gate() -> None:
    g = gate(counting="window")
    state = GateState()
    newly = []
    for value in [4.0, 1.0, 4.0, 4.5]:
        state, ev = step(RATE, g, state, Measurement(value, samples=50), at=1.0,
                         counting_window_s=600, error_limit=4)  # fmt: skip
        newly.append(ev.newly_warned)
    assert newly == [True, False, False, False]


def test_a_clean_window_passes() -> None:
    g = gate()
    state, _ = run(RATE, g, [1.0, 2.0, 1.5])
    assert conclude([(RATE, g)], {RATE: state}).verdict is Verdict.PASSED
