"""Decisions by distance: Wilson intervals against Newcombe's worked cases, and the suggestions."""

from __future__ import annotations

import pytest

from dhash_service.review_stats import decision_stats, wilson_interval


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    [
        # Newcombe (1998), Table II, method 3 (Wilson score interval without continuity correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0000, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_newcombes_worked_cases(
    successes: int, trials: int, low: float, high: float
) -> None:
    got = wilson_interval(successes, trials)
    assert got == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_no_trials_is_the_whole_interval_and_impossible_counts_are_refused() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def counts(table: dict[int | None, tuple[int, int, int]]) -> list[tuple[int | None, str, int]]:
    rows: list[tuple[int | None, str, int]] = []
    for distance, (confirmed, rejected, pending) in table.items():
        rows += [(distance, "confirmed", confirmed), (distance, "rejected", rejected)]
        rows += [(distance, "pending", pending)]
    return rows


@pytest.mark.parametrize(
    ("table", "match", "review"),
    [
        # near items all confirmed, far ones all rejected: both thresholds move inwards
        ({5: (200, 0, 0), 6: (150, 1, 0), 7: (40, 40, 0), 9: (0, 120, 3), 10: (0, 200, 0)}, 6, 8),
        # a mixed nearest distance: nothing safe to auto-match
        ({5: (30, 30, 0), 10: (0, 300, 0)}, None, 9),
        # too few decisions to say anything
        ({5: (3, 0, 0), 10: (0, 4, 0)}, None, None),
        # the far end still confirms sometimes: keep reviewing it
        ({5: (300, 0, 0), 10: (20, 100, 0)}, 5, None),
        # nothing decided yet
        ({7: (0, 0, 12)}, None, None),
    ],
)
def test_suggested_thresholds_follow_what_people_decided(
    table: dict[int | None, tuple[int, int, int]], match: int | None, review: int | None
) -> None:
    stats = decision_stats(counts(table))
    assert (stats.suggested_match_threshold, stats.suggested_review_threshold) == (match, review)


def test_rows_are_by_distance_with_items_without_a_candidate_last() -> None:
    stats = decision_stats([(None, "rejected", 2), (7, "confirmed", 3), (5, "pending", 1)])
    assert [r.distance for r in stats.rows] == [5, 7, None]
    assert stats.decided == 5 and stats.pending == 1
    assert stats.rows[1].confirmed_share == 1.0 and stats.rows[0].confirmed_share is None


def test_an_unknown_status_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown review status"):
        decision_stats([(5, "maybe", 1)])
