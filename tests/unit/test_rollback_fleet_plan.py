"""The data-restoring rollback's decisions on a fleet (rollback/fleet_plan.py): which hosts stop,
in which order and on what each comes back after the one restore; what a resumed run redoes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.rollback.decision import RollbackFacts, plan_rollback
from dhash_rollout.rollback.fleet_plan import (
    FleetRestorePlan,
    HostFacts,
    goes_back,
    host_records,
    hosts_back,
    hosts_going_back,
    plan_fleet_restore,
    plan_serve_again,
    touched_hosts,
    with_fleet_steps,
)
from dhash_rollout.rollback.run import _resumed_plan
from dhash_rollout.runs.journal import RUN_PHASE, Journal, RunState, Status
from dhash_rollout.runs.plan import Phase

OLD, NEW = "1.1.0", "2.0.0"


def _hosts(*rows: tuple[str, str | None, bool]) -> list[HostFacts]:
    return [HostFacts(name, serving, touched) for name, serving, touched in rows]


def _batches(plan: FleetRestorePlan) -> list[list[str]]:
    return [[s.describe() for s in batch] for batch in plan.batches]


CASES = [
    (
        "a whole fleet on the new release: every host switched, in one batch",
        _hosts(("web1", NEW, True), ("web2", NEW, True), ("web3", NEW, True)),
        (),
        [["web1: switch to 1.1.0", "web2: switch to 1.1.0", "web3: switch to 1.1.0"]],
    ),
    (
        "stopped after its first wave: the untouched hosts start first, then the touched one",
        _hosts(("web1", NEW, True), ("web2", OLD, False), ("web3", OLD, False)),
        (),
        [
            [
                "web2: start 1.1.0 again, not touched by the deploy",
                "web3: start 1.1.0 again, not touched by the deploy",
            ],
            ["web1: switch to 1.1.0"],
        ],
    ),
    (
        "a touched host the wave's undo already put back is only started again",
        _hosts(("web1", OLD, True), ("web2", NEW, True)),
        (),
        [["web1: start 1.1.0 again"], ["web2: switch to 1.1.0"]],
    ),
    (
        "a host the deploy never touched keeps its own release",
        _hosts(("web1", NEW, True), ("web2", "1.0.0", False)),
        (),
        [["web2: start 1.0.0 again, not touched by the deploy"], ["web1: switch to 1.1.0"]],
    ),
    (
        "resumed: the hosts the interrupted run put back are left serving",
        _hosts(("web1", OLD, True), ("web2", NEW, True), ("web3", OLD, True)),
        ("web1",),
        [["web3: start 1.1.0 again"], ["web2: switch to 1.1.0"]],
    ),
    (
        "resumed with every host back: nothing to bring back",
        _hosts(("web1", OLD, True), ("web2", OLD, True)),
        ("web1", "web2"),
        [],
    ),
]


@pytest.mark.parametrize(("hosts", "back", "batches"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_every_host_stops_and_each_comes_back_as_the_deploy_left_it(
    hosts: list[HostFacts], back: tuple[str, ...], batches: list[list[str]]
) -> None:
    plan = plan_fleet_restore(hosts, OLD, back)
    assert plan.stop == tuple(h.name for h in hosts)  # every host, back ones included
    assert _batches(plan) == batches
    assert plan.back == back and plan.refusal is None
    assert plan.touched == tuple(h.name for h in hosts if h.touched)


def test_a_host_whose_release_cannot_be_read_refuses_the_restore_naming_it() -> None:
    hosts = [HostFacts("web1", NEW, True), HostFacts("web2", None, True, "could not connect")]
    plan = plan_fleet_restore(hosts, OLD)
    assert plan.refusal is not None
    assert "web2" in plan.refusal and "could not connect" in plan.refusal
    # a resumed run (its hosts already stopped) ignores the refusal and tries the host
    assert _batches(plan) == [["web1: switch to 1.1.0", "web2: switch to 1.1.0"]]


def test_serving_again_starts_every_readable_host_on_its_release_in_one_batch() -> None:
    plan = plan_serve_again({"web1": NEW, "web2": OLD, "web3": None})
    assert _batches(plan) == [["web1: start 2.0.0 again, not touched by the deploy",
                               "web2: start 1.1.0 again, not touched by the deploy"]]  # fmt: skip
    assert plan.stop == ("web1", "web2", "web3")
    assert plan_serve_again({"web1": None}).batches == ()


@pytest.mark.parametrize(
    ("states", "serving", "touched"),
    [
        ({"web1": "ready", "web2": "pending", "web3": "rolled_back"}, {},
         {"web1", "web3"}),  # the deploy's journal: every state but pending
        ({}, {"web1": NEW}, set()),  # a fleet deploy that touched nothing
        (None, {"web1": NEW, "web2": OLD, "web3": None}, {"web1", "web3"}),  # no journal
    ],
    ids=["from-the-deploy-journal", "nothing-touched", "without-a-fleet-deploy"],
)  # fmt: skip
def test_the_touched_hosts_come_from_the_deploys_journal_else_from_what_they_serve(
    states: dict[str, str] | None, serving: dict[str, str | None], touched: set[str]
) -> None:
    assert touched_hosts(states, serving, OLD) == touched


def test_each_hosts_last_record_counts_and_only_ready_hosts_are_back() -> None:
    records: list[tuple[str, dict[str, object]]] = [
        ("host:web1", {"state": "stopped"}),
        ("host:web2", {"state": "stopped"}),
        ("export_writes", {"rows": 3}),
        ("host:web1", {"state": "ready", "version": OLD}),
        ("host:web2", {"state": "checking"}),
        ("host:web3", {"error": "no state"}),
    ]
    states = host_records(records)
    assert states == {"web1": "ready", "web2": "checking"}
    assert hosts_back(states) == {"web1"}


def _facts() -> RollbackFacts:
    return RollbackFacts(
        env="staging", url="http://proxy", current_version=NEW, target_version=OLD,
        current_revision="9001_irreversible_probe", target_revision="0009",
        downgrade_reversible=False, database_ok=True, backup="b.zip", backup_requested=False,
    )  # fmt: skip


def test_the_plan_says_every_hosts_stop_and_return_and_a_refusal_warns() -> None:
    fleet = plan_fleet_restore(_hosts(("web1", NEW, True), ("web2", OLD, False)), OLD)
    plan = with_fleet_steps(plan_rollback(_facts()), fleet)
    assert (
        "drain every host in HAProxy and stop it (web1, web2"
        in plan.step(Phase.EXPORT_WRITES).action
    )
    assert plan.step(Phase.ACTIVATE).action == (
        "on the restored database, each host checked and put back: batch 1: web2: start 1.1.0 "
        "again, not touched by the deploy / batch 2: web1: switch to 1.1.0"
    )
    assert plan.step(Phase.RESTORE).action == "restore b.zip"  # once, for every host
    refused = plan_fleet_restore([HostFacts("web1", None, True, "down")], OLD)
    warned = with_fleet_steps(plan_rollback(_facts()), refused)
    assert any("refused before any outage" in w for w in warned.warnings)


def _resumed(tmp_path: Path, phases: list[tuple[str, Status]]) -> RunState:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("rollback-1", RUN_PHASE, "started", {"kind": "rollback"})
    for phase, status in phases:
        journal.append("rollback-1", phase, status, {})
    run = journal.run("rollback-1")
    assert run is not None
    return run


@pytest.mark.parametrize(
    ("phases", "skipped"),
    [
        ([("notify_start", "done"), ("export_writes", "started")], {"notify_start"}),
        ([("notify_start", "done"), ("export_writes", "done"), ("restore", "done"),
          ("reapply_writes", "started")], {"notify_start"}),  # re-apply again on a new restore
        ([("notify_start", "done"), ("export_writes", "done"), ("restore", "done"),
          ("reapply_writes", "done"), ("activate", "started")],
         {"notify_start", "export_writes", "restore", "reapply_writes"}),  # the data is final
        ([("notify_start", "done"), ("reapply_writes", "done"), ("activate", "started"),
          ("notify_start", "skipped"), ("export_writes", "skipped"), ("restore", "skipped"),
          ("reapply_writes", "skipped"), ("activate", "started")],
         {"export_writes", "restore", "reapply_writes"}),  # the first resume journaled skips
    ],
    ids=["killed-in-the-export", "killed-in-the-reapply", "killed-while-hosts-come-back",
         "killed-again-while-hosts-come-back"],
)  # fmt: skip
def test_a_resumed_rollback_never_restores_again_once_its_rows_are_back(
    tmp_path: Path, phases: list[tuple[str, Status]], skipped: set[str]
) -> None:
    """A host put back on the restored data takes writes: a resumed run must not restore the
    backup over them (it would lose every write since the first run's re-apply)."""
    run = _resumed(tmp_path, phases)
    plan = _resumed_plan(plan_rollback(_facts()), run)
    was = {s.phase for s in plan_rollback(_facts()).steps if s.run}
    assert {s.phase for s in plan.steps if not s.run} & was == skipped


@pytest.mark.parametrize(
    ("host", "served", "back"),
    [
        (HostFacts("web1", NEW, True, previous=OLD), (), True),  # the one it served before
        (HostFacts("web1", OLD, False), (), True),  # its own release, started again
        (HostFacts("web1", NEW, True, previous="1.0.0"), (OLD,), True),  # the deploy replaced it
        (HostFacts("web1", NEW, True, previous="1.0.0"), (), False),  # named, never served here
        (HostFacts("web1", None, True, error="unreachable"), (), False),  # nothing known
        (HostFacts("web1", None, True, error="unreachable"), (OLD,), True),
    ],
)
def test_a_rollback_step_to_a_release_that_served_is_a_switch_back(
    host: HostFacts, served: tuple[str, ...], back: bool
) -> None:
    assert goes_back(OLD, host, served) is back
    assert hosts_going_back([host], OLD, served) == ({"web1"} if back else set())


def test_a_restores_steps_say_which_are_switches_back() -> None:
    plan = plan_fleet_restore(
        [HostFacts("web1", NEW, True, previous=OLD), HostFacts("web2", "1.0.0", False),
         HostFacts("web3", NEW, True, previous="1.0.0")],
        OLD,
    )  # fmt: skip
    assert [(s.host, s.back) for s in plan.steps] == [
        ("web2", True), ("web1", True), ("web3", False),
    ]  # fmt: skip
    assert plan_fleet_restore([HostFacts("web3", NEW, True)], OLD, served=(OLD,)).steps[0].back
    assert all(s.back for s in plan_serve_again({"web1": NEW, "web2": OLD}).steps)
