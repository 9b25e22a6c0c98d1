"""The fleet's wave planner: Ansible's ``serial`` batches and ``max_fail_percentage``, checked
on Ansible's own worked cases, then the expand/contract split and a resumed plan."""

from __future__ import annotations

import pytest

from dhash_rollout.deploy.waves import (
    HostState,
    Migration,
    batch_sizes,
    hosts_to_undo,
    plan_waves,
    split_migrations,
    tolerated_failures,
)
from dhash_service.errors import ConfigError

HOSTS10 = [f"host{i}" for i in range(10)]


# Ansible's test/units/executor/test_playbook_executor.py::test_get_serialized_batches
# (the -1 of its mixed list, "the rest", is "100%" here).
@pytest.mark.parametrize(
    ("sizes", "total", "expected"),
    [
        ([2], 10, [2, 2, 2, 2, 2]),
        (["20%"], 10, [2, 2, 2, 2, 2]),
        ([1, 2, 3], 10, [1, 2, 3, 3, 1]),
        ([1, "20%", "100%"], 10, [1, 2, 7]),
        (["20%"], 3, [1, 1, 1]),  # a share under one host is one host
        (["20%"], 11, [2, 2, 2, 2, 2, 1]),  # the remainder is a smaller last wave
        # the shape: one host, a quarter, then everything
        ([1, "25%", "100%"], 3, [1, 1, 1]),
        ([1, "25%", "100%"], 6, [1, 1, 4]),
        ([1, "25%", "100%"], 1, [1]),
        ([5], 3, [3]),  # a wave larger than the fleet is the fleet
    ],
)
def test_batches_follow_ansible_serial(
    sizes: list[int | str], total: int, expected: list[int]
) -> None:
    assert batch_sizes(sizes, total) == expected


# Ansible's documentation: "the percentage set must be exceeded, not equaled"; a wave of 4
# that must stop when 2 fail needs 49, not 50.
@pytest.mark.parametrize(
    ("size", "pct", "tolerated"),
    [
        (4, 49, 1),
        (4, 50, 2),
        (4, 0, 0),
        (1, 0, 0),
        (1, 99, 0),
        (1, 100, 1),
        (3, 33.3, 0),
        (3, 33.34, 1),  # 1/3 = 33.33.. does not exceed 33.34
        (10, 10, 1),
        (10, 9.9, 0),
    ],
)
def test_failure_budget_must_be_exceeded_to_stop(size: int, pct: float, tolerated: int) -> None:
    assert tolerated_failures(size, pct) == tolerated


def test_a_wave_is_breached_by_one_failure_more_than_its_budget() -> None:
    plan = plan_waves(HOSTS10[:4], [4], 49)
    (wave,) = plan.waves
    assert not wave.breached(1)
    assert wave.breached(2)


def test_three_hosts_one_then_a_quarter_then_all() -> None:
    plan = plan_waves(["a", "b", "c"], [1, "25%", "100%"], 0)
    assert [w.hosts for w in plan.waves] == [("a",), ("b",), ("c",)]
    assert [w.number for w in plan.waves] == [1, 2, 3]
    assert plan.hosts == ("a", "b", "c")


def test_the_canary_host_goes_first_alone() -> None:
    plan = plan_waves(["a", "b", "c", "d"], [1, "100%"], 0, first="c")
    assert [w.hosts for w in plan.waves] == [("c",), ("a", "b", "d")]


def test_a_resumed_plan_keeps_its_waves_less_the_finished_hosts() -> None:
    fresh = plan_waves(HOSTS10, [1, "20%", "100%"], 0)
    resumed = plan_waves(HOSTS10, [1, "20%", "100%"], 0, done=["host0", "host1"])
    assert [w.hosts for w in fresh.waves][1:] == [("host1", "host2"), tuple(HOSTS10[3:])]
    assert [w.hosts for w in resumed.waves] == [("host2",), tuple(HOSTS10[3:])]
    assert [w.number for w in resumed.waves] == [2, 3]  # the numbers they had: one per wave
    assert resumed.skipped == ("host0", "host1")


def test_migrations_expand_before_the_waves_and_contract_after() -> None:
    pending = [Migration("0004"), Migration("0005"), Migration("0006", contract=True)]
    plan = plan_waves(["a", "b"], [1], 0, pending=pending)
    assert plan.expand == ("0004", "0005")
    assert plan.contract == ("0006",)
    lines = plan.lines()
    assert lines[0] == "backup the shared database"
    assert lines[1].startswith("migrate (expand) to 0005")
    assert lines[-1].startswith("migrate (contract) to 0006")
    assert lines[2] == "wave 1: a (stops after 1 failed)"


def test_an_expand_migration_after_a_contract_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="0007 \\(expand\\) follows contract migration 0006"):
        split_migrations([Migration("0006", contract=True), Migration("0007")])


@pytest.mark.parametrize(
    ("hosts", "kwargs", "message"),
    [
        ([], {}, "at least one host"),
        (["a", "a"], {}, "named twice"),
        (["a"], {"first": "z"}, "'z' is not in the fleet"),
        (["a"], {"done": ["gone"]}, "no longer has"),
    ],
)
def test_bad_plans_are_refused_with_the_reason(
    hosts: list[str], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_waves(hosts, [1], 0, **kwargs)  # type: ignore[arg-type]


def test_only_touched_hosts_are_undone() -> None:
    states = {
        "a": HostState.READY,
        "b": HostState.FAILED,
        "c": HostState.PENDING,
        "d": HostState.ROLLED_BACK,
        "e": HostState.DRAINING,
        "f": HostState.SWITCHING,
        "g": HostState.CHECKING,
    }
    assert hosts_to_undo(states) == ("a", "b", "e", "f", "g")
