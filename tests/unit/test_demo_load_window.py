"""Who served when, as the demo's traffic saw it: the window of a version runs from its first
``/health`` answer to the first answer of another version after its last one."""

from __future__ import annotations

import pytest

from dhash_rollout.demo.load import Ack, LoadResult


@pytest.mark.parametrize(
    ("versions", "version", "window"),
    [
        ([(10.0, "a"), (20.0, "b"), (35.0, "a")], "b", (20.0, 35.0)),
        ([(10.0, "a"), (20.0, "b")], "b", (20.0, 50.0)),  # still serving at the end
        ([(10.0, "a"), (20.0, "b"), (25.0, "a"), (30.0, "b"), (40.0, "a")], "b", (20.0, 40.0)),
        ([(10.0, "a")], "b", None),
        ([], "a", None),
    ],
)
def test_a_version_serves_from_its_first_answer_to_the_next_version_after_its_last(
    versions: list[tuple[float, str]], version: str, window: tuple[float, float] | None
) -> None:
    result = LoadResult(versions=versions, started=5.0, ended=50.0)
    assert result.served(version) == window


def test_acknowledgements_are_counted_inside_a_window_edges_included() -> None:
    result = LoadResult(acks=[Ack(19.9, (1,)), Ack(20.0, (2,)), Ack(35.0, (3, 4)), Ack(35.1, (5,))])
    assert result.acked_between(20.0, 35.0) == 2
    assert result.image_ids == [1, 2, 3, 4, 5]
