"""The failure-rate ratio test of Lindon & Malek (2022) with per-poll exposure."""

from __future__ import annotations

import math

import pytest

from dhash_rollout.canary.counts import RateRatioTest
from tests.unit.test_canary_mixture import closed_form


@pytest.mark.parametrize(
    ("share", "k", "polls"),
    [
        (0.1, 10, [(2, 100, 10, 900), (0, 100, 7, 900), (5, 100, 9, 900)]),
        (0.5, 2, [(3, 50, 1, 50), (4, 50, 2, 50)]),
        (0.25, 4, [(1, 250, 9, 750)] * 6),
    ],
)
def test_at_a_constant_share_it_is_the_papers_closed_form(
    share: float, k: int, polls: list[tuple[int, int, int, int]]
) -> None:
    """With the canary's share fixed, each failure is the canary's with probability ρ under the
    null: the one-sided beta-binomial Bayes factor of the failure counts."""
    test = RateRatioTest.start(share, concentration=k)
    for cf, ce, sf, se in polls:
        test = test.update(cf, ce, sf, se)
    x = sum(p[0] for p in polls)
    y = sum(p[2] for p in polls)
    expected = closed_form(share, round(k * share), round(k * (1 - share)), x, y)
    assert test.log_e_value == pytest.approx(expected, abs=5e-4)


def test_a_margin_moves_the_null_to_that_ratio() -> None:
    # margin 2 at share 0.2: θ0 = 0.4 / (0.4 + 0.8) = 1/3
    test = RateRatioTest.start(0.2, margin=2.0, concentration=3).update(6, 200, 4, 800)
    assert test.log_e_value == pytest.approx(closed_form(1 / 3, 1, 2, 6, 4), abs=5e-4)


def test_exposure_not_share_of_failures_decides() -> None:
    """The same failure counts are evidence or not depending on how much work each release did:
    the null is a failure *rate* per extraction."""
    counts = (10, 10)  # canary, stable failures
    even = RateRatioTest.start(0.1).update(counts[0], 500, counts[1], 500)
    skewed = RateRatioTest.start(0.1).update(counts[0], 100, counts[1], 900)
    assert skewed.log_e_value > math.log(20) > even.log_e_value
    assert skewed.ratio_estimate == pytest.approx(9.0)
    assert even.ratio_estimate == pytest.approx(1.0)


def test_polls_without_failures_or_without_work_change_nothing() -> None:
    base = RateRatioTest.start(0.1).update(3, 100, 2, 900)
    after = base.update(0, 100, 0, 900).update(2, 50, 0, 0).update(0, 0, 4, 900)
    assert after.log_e_value == base.log_e_value
    assert after.canary_failures == 3 + 2  # counted, just not evidence about the ratio


def test_updates_leave_the_previous_test_untouched() -> None:
    a = RateRatioTest.start(0.1)
    b = a.update(5, 100, 1, 900)
    assert a.log_e_value == 0.0 and a.canary_failures == 0
    assert b.log_e_value > 0.0


def test_a_better_canary_builds_no_evidence() -> None:
    test = RateRatioTest.start(0.1)
    for _ in range(50):
        test = test.update(0, 100, 20, 900)
    assert test.log_e_value < 0.0


@pytest.mark.parametrize(
    ("poll", "message"),
    [
        ((-1, 10, 0, 10), "canary failures cannot be negative"),
        ((0, 10, 0, -5), "stable extractions cannot be negative"),
        ((11, 10, 0, 10), "more failures than extractions"),
    ],
)
def test_impossible_increments_are_refused(poll: tuple[int, int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateRatioTest.start(0.1).update(*poll)


@pytest.mark.parametrize(("share", "margin"), [(0.0, 1.0), (1.0, 1.0), (0.1, 0.0)])
def test_a_share_outside_zero_one_or_a_non_positive_margin_is_refused(
    share: float, margin: float
) -> None:
    with pytest.raises(ValueError, match=r"share|margin"):
        RateRatioTest.start(share, margin)
