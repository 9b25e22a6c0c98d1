"""The guide's schedule: every 30 s for 5 minutes, then every 2 minutes, over 60 minutes."""

from __future__ import annotations

import pytest

from dhash_rollout.monitor.cadence import Step, poll_offsets

GUIDE = [Step(300, 30), Step(3600, 120)]


def test_the_guides_schedule_polls_exactly_when_it_says() -> None:
    first = [30.0 * k for k in range(1, 11)]  # 30 s ... 5 min
    then = [300.0 + 120 * k for k in range(1, 28)]  # 7 min ... 59 min
    assert poll_offsets(GUIDE, 3600) == [*first, *then, 3600.0]


@pytest.mark.parametrize("scale", [2.0, 60.0, 720.0])
def test_time_scale_runs_the_same_schedule_faster(scale: float) -> None:
    assert poll_offsets(GUIDE, 3600, scale) == [
        pytest.approx(t / scale) for t in poll_offsets(GUIDE, 3600)
    ]


@pytest.mark.parametrize(
    ("duration", "expected"),
    [(90, [30.0, 60.0, 90.0]), (100, [30.0, 60.0, 90.0, 100.0]), (420, [*range(30, 301, 30), 420])],
)
def test_a_shorter_duration_cuts_the_schedule_and_ends_on_a_poll(
    duration: float, expected: list[float]
) -> None:
    assert poll_offsets(GUIDE, duration) == [float(x) for x in expected]


@pytest.mark.parametrize(("duration", "scale"), [(0, 1), (60, 0), (-5, 1)])
def test_nonsense_durations_are_refused(duration: float, scale: float) -> None:
    with pytest.raises(ValueError, match="> 0"):
        poll_offsets(GUIDE, duration, scale)
