"""The canary's HTML report, rendered from hand-made polls replayed through the real judge."""

from __future__ import annotations

import math
import re

import pytest

from dhash_rollout.canary.judge import JudgeConfig, Poll, ReleasePoll, Step, replay
from dhash_rollout.canary.quantiles import Histogram
from dhash_rollout.canary.report import Header, bucket_quantile, render

BOUNDS = (0.01, 0.02, 0.05, 0.1, 0.2)
CONFIG = JudgeConfig(steps=(Step(10, 300.0),), bounds=BOUNDS, max_wait_seconds=300.0)


def _rel(n: int, failures: int) -> ReleasePoll:
    return ReleasePoll(n, failures, Histogram(BOUNDS, (n // 2, n - n // 2, 0, 0, 0, 0)), True)


@pytest.mark.parametrize(
    ("counts", "q", "expected"),
    [
        ((0, 0, 0, 0, 0, 0), 0.95, None),  # no observation: no quantile
        ((10, 0, 0, 0, 0, 0), 0.95, 0.01),
        ((50, 45, 5, 0, 0, 0), 0.95, 0.02),  # 95 of 100 at or below 20 ms
        ((50, 44, 6, 0, 0, 0), 0.95, 0.05),
        ((0, 0, 0, 0, 0, 3), 0.5, math.inf),  # above every bound
    ],
)
def test_the_bucket_quantile_is_the_least_bound_holding_that_share(
    counts: tuple[int, ...], q: float, expected: float | None
) -> None:
    assert bucket_quantile(Histogram(BOUNDS, counts), q) == expected


def test_an_aborted_canary_shows_both_releases_side_by_side_and_the_worse_check() -> None:
    polls = [Poll(30.0 * (i + 1), _rel(10, 3), _rel(90, 1)) for i in range(10)]
    judgements = replay(polls, CONFIG)
    assert judgements[-1].action.value == "abort"  # the judge's own decision on these polls
    polls = polls[: len(judgements)]  # the ledger ends with the poll the controller acted on
    header = Header("2.0.0", "1.0.0", "production", "aborted", "<script>x</script>", "canary-1")
    page = render(header, polls, judgements, CONFIG)
    assert "ABORTED" in page and "2.0.0 beside 1.0.0" in page
    assert "<script>" not in page and "&lt;script&gt;" in page  # the reason is escaped
    # each release has its own line in the failure-rate, P95 and extractions plots
    assert page.count('data-series="canary"') == 3 and page.count('data-series="stable"') == 3
    # the last judgement's checks, the worse one marked, with the abort line 1/(alpha/4)
    worse = re.findall(r"<tr class='worse'><td>([^<]+)</td>", page)
    assert worse and "failures vs stable" in worse
    assert f"<td>{1 / CONFIG.check_alpha:g}</td>" in page
    # every poll in the table, with both releases' counts
    assert page.count("<td>10 / 3 / ≤ 20 ms</td>") == len(polls)
    assert page.count("<td>90 / 1 / ≤ 20 ms</td>") == len(polls)


def test_no_poll_yet_is_said_not_drawn() -> None:
    header = Header("2.0.0", "1.0.0", "production", "running", "", "canary-1")
    page = render(header, [], [], CONFIG)
    assert "No poll recorded." in page and "<svg" not in page
