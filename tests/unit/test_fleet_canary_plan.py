"""The fleet canary's pure decisions (canary/fleet_plan.py): which host, which HAProxy
weights give the canary its share, the stable hosts summed, whether an interrupted canary
can go on."""

from __future__ import annotations

import pytest

from dhash_rollout.canary.fleet_plan import (
    MAX_WEIGHT,
    canary_host,
    canary_weights,
    changed_weights,
    resume_problem,
    share_of,
    summed,
)
from dhash_rollout.canary.judge import ReleasePoll
from dhash_rollout.canary.quantiles import Histogram
from dhash_service.errors import ConfigError

THREE = {"web1": 100, "web2": 100, "web3": 100}


@pytest.mark.parametrize(
    ("hosts", "configured", "chosen"),
    [
        (["web1", "web2", "web3"], None, "web1"),  # the first host of the first wave
        (["web1", "web2", "web3"], "web3", "web3"),  # the configured one
        (["b", "a"], None, "b"),  # inventory order, not sorted
    ],
)
def test_the_canary_host_is_the_configured_one_or_the_first_of_the_first_wave(
    hosts: list[str], configured: str | None, chosen: str
) -> None:
    assert canary_host(hosts, configured) == chosen


@pytest.mark.parametrize(
    ("hosts", "configured", "says"),
    [
        (["web1", "web2"], "web9", "not in the fleet"),
        (["web1"], None, "at least two hosts"),
        ([], None, "at least two hosts"),
    ],
)
def test_a_canary_host_that_cannot_be_is_refused(
    hosts: list[str], configured: str | None, says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        canary_host(hosts, configured)


@pytest.mark.parametrize(
    ("share", "normal", "weights", "real_share"),
    [
        # the stable hosts keep their weights; the canary's gives the share
        (50, THREE, {"web1": 200, "web2": 100, "web3": 100}, 50.0),
        (5, THREE, {"web1": 11, "web2": 100, "web3": 100}, 100 * 11 / 211),
        (10, THREE, {"web1": 22, "web2": 100, "web3": 100}, 100 * 22 / 222),
        (0, THREE, {"web1": 0, "web2": 100, "web3": 100}, 0.0),
        # a share too small for a weight of 1: at least 1 (never silently out of rotation)
        (0.1, THREE, {"web1": 1, "web2": 100, "web3": 100}, 100 * 1 / 201),
        # unequal stable weights: their sum counts
        (25, {"web1": 100, "web2": 50, "web3": 250}, {"web1": 100, "web2": 50, "web3": 250},
         25.0),
        # above 256 the stable hosts are scaled down together, never below 1
        (75, THREE, {"web1": 256, "web2": 43, "web3": 43}, 100 * 256 / 342),
        (90, {"web1": 100, "web2": 100, "web3": 1}, {"web1": 256, "web2": 28, "web3": 1},
         100 * 256 / 285),
    ],
)  # fmt: skip
def test_the_canary_share_is_the_canary_hosts_haproxy_weight(
    share: float, normal: dict[str, int], weights: dict[str, int], real_share: float
) -> None:
    got = canary_weights(share, "web1", normal)
    assert got.weights == weights
    assert list(got.weights) == list(normal)  # inventory order kept
    assert got.share_pct == pytest.approx(real_share)
    assert share_of(got.weights, "web1") == pytest.approx(real_share)
    assert all(0 <= w <= MAX_WEIGHT for w in got.weights.values())


@pytest.mark.parametrize(
    ("share", "canary", "normal", "says"),
    [
        (100, "web1", THREE, "below 100"),
        (-1, "web1", THREE, "below 100"),
        (10, "web9", THREE, "not in the fleet"),
        (10, "web1", {"web1": 100, "web2": 0}, "all 0"),
    ],
)
def test_a_share_no_weight_can_give_is_refused(
    share: float, canary: str, normal: dict[str, int], says: str
) -> None:
    with pytest.raises(ConfigError, match=says):
        canary_weights(share, canary, normal)


@pytest.mark.parametrize(
    ("now", "wanted", "to_set"),
    [
        ({"web1": 100, "web2": 100}, {"web1": 11, "web2": 100}, {"web1": 11}),
        ({"web1": 11, "web2": 100}, {"web1": 11, "web2": 100}, {}),
        ({"web1": None}, {"web1": 100}, {"web1": 100}),  # unknown: set
    ],
)
def test_only_the_weights_that_differ_are_set(
    now: dict[str, int | None], wanted: dict[str, int], to_set: dict[str, int]
) -> None:
    assert changed_weights(now, wanted) == to_set


BOUNDS = (0.1, 1.0)


def _poll(
    extractions: int, failures: int, counts: tuple[int, int, int], healthy: bool | None
) -> ReleasePoll:
    return ReleasePoll(extractions, failures, Histogram(BOUNDS, counts), healthy)


@pytest.mark.parametrize(
    ("polls", "total"),
    [
        ([_poll(3, 1, (2, 1, 0), True), _poll(5, 0, (4, 0, 1), True)],
         _poll(8, 1, (6, 1, 1), True)),
        # a stable host that did not answer counts nothing and makes stable unhealthy
        ([_poll(3, 1, (2, 1, 0), True), _poll(0, 0, (0, 0, 0), False)],
         _poll(3, 1, (2, 1, 0), False)),
        ([], _poll(0, 0, (0, 0, 0), False)),  # no stable host answered: nothing, unhealthy
    ],
)  # fmt: skip
def test_the_stable_hosts_are_summed_as_one_release(
    polls: list[ReleasePoll], total: ReleasePoll
) -> None:
    assert summed(polls, BOUNDS) == total


@pytest.mark.parametrize(
    ("served", "problem"),
    [
        ({"web1": "2.0.0", "web2": "1.0.0", "web3": "1.0.0"}, None),
        ({"web1": "1.0.0", "web2": "1.0.0", "web3": "1.0.0"},
         "the canary host web1 serves 1.0.0, not 2.0.0"),
        ({"web1": None, "web2": "1.0.0", "web3": "1.0.0"},
         "the canary host web1 serves nothing, not 2.0.0"),
        ({"web1": "2.0.0", "web2": "2.0.0", "web3": None},
         "stable hosts no longer serve 1.0.0: web2 (2.0.0), web3 (nothing)"),
    ],
)  # fmt: skip
def test_an_interrupted_fleet_canary_goes_on_only_as_it_was_left(
    served: dict[str, str | None], problem: str | None
) -> None:
    assert resume_problem(served, "web1", "2.0.0", "1.0.0") == problem
