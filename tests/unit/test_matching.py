"""Decisions and confidence from plain candidate lists (docs/matching.md)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dhash_service.errors import ConfigError
from dhash_service.matching import Candidate, Thresholds, candidate_confidence, decide

T = Thresholds(match=4, review=10, ambiguity_margin=2)


def cand(image_id: int, distance: int, value: int | None = None) -> Candidate:
    return Candidate(image_id, distance, image_id * 1000 if value is None else value)


def test_nothing_near_is_new_with_full_confidence() -> None:
    decision = decide([], low_information=False, thresholds=T)
    assert (decision.kind, decision.confidence, decision.reason) == ("new", 1.0, None)


def test_candidates_beyond_the_review_threshold_are_ignored() -> None:
    decision = decide([cand(1, 11), cand(2, 30)], low_information=False, thresholds=T)
    assert decision.kind == "new"
    assert decision.candidates == ()


def test_a_low_information_new_image_gets_half_confidence() -> None:
    assert decide([], low_information=True, thresholds=T).confidence == 0.5


@pytest.mark.parametrize(("distance", "confidence"), [(0, 1.0), (3, 0.7273), (4, 0.6364)])
def test_within_the_match_threshold_is_a_match(distance: int, confidence: float) -> None:
    decision = decide([cand(7, distance)], low_information=False, thresholds=T)
    assert decision.kind == "match"
    assert decision.best == cand(7, distance)
    assert decision.confidence == confidence  # 1 - d / (R + 1)


@pytest.mark.parametrize("distance", [5, 8, 10])
def test_the_review_band_goes_to_review(distance: int) -> None:
    decision = decide([cand(7, distance)], low_information=False, thresholds=T)
    assert (decision.kind, decision.reason) == ("review", "review_band")
    assert decision.confidence == round(1 - distance / 11, 4)


def test_two_different_library_hashes_close_together_are_ambiguous() -> None:
    decision = decide([cand(1, 2), cand(2, 4)], low_information=False, thresholds=T)
    assert (decision.kind, decision.reason) == ("review", "ambiguous")
    assert decision.runner_up == cand(2, 4)
    # distance term 1 - 2/11, margin term 0.5 + 0.5 * 2/3
    assert decision.confidence == round((1 - 2 / 11) * (0.5 + 0.5 * 2 / 3), 4)


def test_a_runner_up_beyond_the_margin_is_not_ambiguous() -> None:
    decision = decide([cand(1, 1), cand(2, 4)], low_information=False, thresholds=T)
    assert decision.kind == "match"
    assert decision.confidence == round(1 - 1 / 11, 4)


def test_library_copies_with_the_identical_hash_are_not_ambiguous() -> None:
    same_picture = [cand(1, 1, value=99), cand(2, 1, value=99), cand(3, 1, value=99)]
    decision = decide(same_picture, low_information=False, thresholds=T)
    assert decision.kind == "match"
    assert decision.runner_up is None
    assert decision.best is not None and decision.best.image_id == 1


def test_a_low_information_hash_never_matches_automatically() -> None:
    decision = decide([cand(1, 0)], low_information=True, thresholds=T)
    assert (decision.kind, decision.reason, decision.confidence) == (
        "review",
        "low_information",
        0.5,
    )


def test_the_review_band_reason_wins_over_ambiguity() -> None:
    decision = decide([cand(1, 6), cand(2, 7)], low_information=True, thresholds=T)
    assert decision.reason == "review_band"


def test_candidate_order_does_not_matter() -> None:
    forward = decide([cand(1, 3), cand(2, 9)], low_information=False, thresholds=T)
    backward = decide([cand(2, 9), cand(1, 3)], low_information=False, thresholds=T)
    assert forward == backward


@pytest.mark.parametrize(
    ("match", "review", "margin"), [(-1, 10, 2), (5, 4, 2), (4, 33, 2), (4, 10, -1)]
)
def test_inconsistent_thresholds_are_a_config_error(match: int, review: int, margin: int) -> None:
    with pytest.raises(ConfigError):
        Thresholds(match=match, review=review, ambiguity_margin=margin)


@given(
    near=st.integers(0, 10),
    further=st.integers(0, 10),
    low=st.booleans(),
)
def test_confidence_is_in_unit_range_and_falls_with_distance(
    near: int, further: int, low: bool
) -> None:
    a, b = sorted((near, further))
    assert 0.0 < candidate_confidence(b, low, T) <= candidate_confidence(a, low, T) <= 1.0
    decision = decide([cand(1, a)], low_information=low, thresholds=T)
    assert 0.0 < decision.confidence <= 1.0
