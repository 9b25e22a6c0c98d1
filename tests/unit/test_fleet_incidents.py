"""A fleet canary's incidents, without the hosts: the fence that keeps a killed controller's
late switch from landing after an undo (a real ``sh`` and ``flock`` on a temporary root), the
abort that keeps its canary open until every touched host is back (the hosts and the proxy in
memory, the journal and the state files real), and the canary state a fleet deploy closes."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog

from dhash_rollout.canary.controller import CanaryState, closed_state, read_state, status_line
from dhash_rollout.canary.fleet import FLEET_OPEN, FleetCanaryRun
from dhash_rollout.canary.judge import JudgeConfig
from dhash_rollout.deploy.fleet import host_states
from dhash_rollout.deploy.waves import HostState, plan_waves
from dhash_rollout.environments import Environment, EnvironmentSettings, HostSettings
from dhash_rollout.runs.context import RunContext
from dhash_rollout.runs.journal import Journal, RunState, Status
from dhash_rollout.targets.fleet.agent import fenced
from dhash_rollout.targets.fleet.payload import BACK_READY_SECONDS, DhashReleases

HOSTS = ["web1", "web2", "web3"]


def _sent(root: Path, fence: int, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", fenced(str(root), fence, command)], capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fences", "ran"),
    [
        ([10, 20, 30], [10, 20, 30]),  # in the order sent: each runs
        ([20, 10], [20]),  # the undo's (20) ran first: the killed controller's (10) is refused
        ([20, 20], [20, 20]),  # the same step again (a resume) is not refused
        ([30, 10, 20, 40], [30, 40]),
    ],
)
def test_a_switch_sent_before_one_that_already_ran_is_refused(
    tmp_path: Path, fences: list[int], ran: list[int]
) -> None:
    log = tmp_path / "ran"
    for fence in fences:
        done = _sent(tmp_path, fence, f"echo {fence} >> {log}")
        if fence in ran:
            assert done.returncode == 0, done.stderr
        else:
            assert done.returncode == 1 and "superseded" in done.stderr, done
    assert [int(x) for x in log.read_text().split()] == ran


def test_the_fence_lock_is_not_kept_by_what_the_switch_starts(tmp_path: Path) -> None:
    """A switch may start the host's supervisord, which outlives it: it must not inherit the
    fence lock, or every later switch of the host would wait for it."""
    done = _sent(tmp_path, 1, "sleep 60 >/dev/null 2>&1 & echo $!")
    daemon = int(done.stdout)
    try:
        held = {os.readlink(f"/proc/{daemon}/fd/{fd}") for fd in os.listdir(f"/proc/{daemon}/fd")}
        assert str(tmp_path / "agent.fence.lock") not in held, held
        assert _sent(tmp_path, 2, "true").returncode == 0  # not blocked by the daemon
    finally:
        os.kill(daemon, signal.SIGTERM)


def _state(status: str = "running", run_id: str = "canary-1") -> CanaryState:
    return CanaryState(
        version="1.3.0", stable="1.1.0", slot="web1", slot_pid=0, stable_pid=0, members={},
        weight=50.0, status=status, started_at=0.0, run_id=run_id, host="web1",
    )  # fmt: skip


def _run_state(outcome: Status | None, run_id: str = "canary-1") -> RunState:
    return RunState(run_id, "canary", {}, {}, outcome)


@pytest.mark.parametrize(
    ("state", "run", "closed"),
    [
        (_state("running"), _run_state("failed"), True),  # a deploy undid it: aborted now
        (_state("promoting"), _run_state("failed"), True),
        (_state("aborting"), _run_state("failed"), True),
        (_state("interrupted"), _run_state("failed"), True),
        (_state("running"), _run_state(None), False),  # its run still open: still a canary
        (_state("aborted"), _run_state("failed"), False),  # ended already
        (_state("promoted"), _run_state("done"), False),
        (_state("running", "canary-2"), _run_state("failed"), False),  # another run's state
        (None, _run_state("failed"), False),
        (_state("running"), None, False),
    ],
)
def test_an_open_canary_whose_run_was_closed_is_marked_aborted(
    state: CanaryState | None, run: RunState | None, closed: bool
) -> None:
    ended = closed_state(state, run, FLEET_OPEN, "undone by a fleet deploy")
    if not closed:
        assert ended is None
        return
    assert ended is not None and state is not None
    assert (ended.status, ended.weight) == ("aborted", 0.0)
    assert ended.reason == "its run was closed meanwhile (failed, undone by a fleet deploy)"
    assert state.status != "aborted"  # a new state; the one read is left as it was


class _Fleet:
    """Three hosts and their proxy in memory: each switch back answers the next of
    ``answers`` (None: done; a text: why it failed, as the engine reports a host)."""

    def __init__(self, answers: Sequence[str | None]) -> None:
        self.answers = list(answers)
        self.switched: list[tuple[str, str]] = []
        self.weights = {"web1": 200, "web2": 100, "web3": 100}
        self.runtime = self  # HAProxy's runtime API, as ProxiedHosts.runtime

    def servers(self, _backend: str) -> list[SimpleNamespace]:
        return [SimpleNamespace(name=h, weight=w) for h, w in self.weights.items()]

    def set_weight(self, _backend: str, host: str, weight: int) -> None:
        self.weights[host] = weight

    def drain(self, _host: str) -> str | None:
        return None

    def switch(
        self, hosts: Sequence[str], version: str, *, back: bool = False
    ) -> dict[str, str | None]:
        assert back  # an abort only ever switches back
        self.switched += [(h, version) for h in hosts]
        answer = self.answers.pop(0) if self.answers else None
        return dict.fromkeys(hosts, answer)

    def check(self, hosts: Sequence[str]) -> dict[str, str | None]:
        return dict.fromkeys(hosts)

    def ready(self, host: str) -> str | None:
        self.weights[host] = 100
        return None


def _canary(tmp_path: Path, fleet: _Fleet) -> tuple[FleetCanaryRun, Journal]:
    """A fleet canary run on web1 (journaled ready at its weight), its controller ours."""
    env = Environment("staging", tmp_path, 18080, "http://lb", "sqlite:////x/db.sqlite3")
    target = SimpleNamespace(
        host_list=tuple(HostSettings(name=h, address=f"10.0.0.{i}") for i, h in
                        enumerate(HOSTS, 1)),
        hosts=fleet, proxy=SimpleNamespace(backend="dhash"),
    )  # fmt: skip
    journal = Journal.for_root(tmp_path)
    journal.append("canary-1", "run", "started",
                   {"kind": "canary", "from_versions": dict.fromkeys(HOSTS, "1.1.0")})  # fmt: skip
    for state in ("draining", "switching", "checking", "ready"):
        journal.append("canary-1", "host:web1", "started", {"state": state, "wave": 0})
    ctx = RunContext(
        "canary", env, cast(Any, target), journal, "canary-1", tmp_path, tmp_path / "logs",
        tmp_path / "backups", structlog.get_logger(), lambda _m: None,
    )  # fmt: skip
    return FleetCanaryRun(ctx, cast(Any, target), JudgeConfig()), journal


TIMED_OUT = "slot a did not become ready within 15 s"


@pytest.mark.parametrize(
    ("answers", "status", "tries"),
    [
        ([None], "aborted", 1),
        ([TIMED_OUT, None], "aborted", 2),  # a switch back that timed out under load: again
        ([TIMED_OUT, TIMED_OUT], "aborting", 2),  # still not back: the canary stays open
    ],
)
def test_an_abort_ends_the_canary_only_once_its_host_is_back(
    tmp_path: Path, answers: list[str | None], status: str, tries: int
) -> None:
    fleet = _Fleet(answers)
    canary, journal = _canary(tmp_path, fleet)
    canary.abort(_state(), "hash time vs stable")
    ended = read_state(canary.env)
    assert ended is not None and ended.status == status
    assert fleet.switched == [("web1", "1.1.0")] * tries  # only the canary host, to stable
    assert fleet.weights == dict.fromkeys(HOSTS, 100)  # the weights back either way
    run = journal.run("canary-1")
    assert run is not None
    web1 = host_states(run, HOSTS)["web1"]
    if status == "aborted":
        assert run.outcome == "failed" and web1 == HostState.ROLLED_BACK
        assert ended.reason == "hash time vs stable"
        return
    # not back: said so, the run left open, and the journal still has web1 on the candidate
    assert run.outcome is None and web1 == HostState.READY
    assert (
        ended.reason
        == f"hash time vs stable; NOT put back: web1: switch back to 1.1.0: {TIMED_OUT}"
    )
    line = status_line(canary.env)
    assert line is not None and "its abort did not finish" in line and "tries again" in line


def test_an_unfinished_abort_is_finished_by_the_next_command(tmp_path: Path) -> None:
    """``canary abort`` (or ``start``, through ``resume``) again: the undo goes on from the
    journal, and the reason is the abort's own, not the failure's text twice."""
    fleet = _Fleet([TIMED_OUT, TIMED_OUT, None])
    canary, journal = _canary(tmp_path, fleet)
    canary.abort(_state(), "hash time vs stable")
    left = read_state(canary.env)
    assert left is not None and left.status == "aborting"
    canary.resume(left)  # what `dhash canary start` does with an aborting state
    ended = read_state(canary.env)
    assert ended is not None and (ended.status, ended.reason) == ("aborted", "hash time vs stable")
    assert fleet.switched == [("web1", "1.1.0")] * 3
    run = journal.run("canary-1")
    assert run is not None and run.outcome == "failed"
    assert host_states(run, HOSTS)["web1"] == HostState.ROLLED_BACK


def test_an_abort_says_aborting_before_its_undo_begins(tmp_path: Path) -> None:
    """A controller killed inside the undo leaves ``aborting`` (not ``running``): the next
    start goes on with the abort instead of judging the canary again."""
    seen: list[str] = []

    class _Watched(_Fleet):
        def switch(
            self, hosts: Sequence[str], version: str, *, back: bool = False
        ) -> dict[str, str | None]:
            state = read_state(canary.env)
            seen.append(state.status if state else "none")
            return super().switch(hosts, version, back=back)

    canary, _ = _canary(tmp_path, _Watched([None]))
    canary.abort(_state(), "aborted by an operator")
    assert seen == ["aborting"]


@pytest.mark.parametrize(
    ("sizes", "done", "numbers"),
    [
        ([1, "100%"], [], [1, 2]),
        ([1, "100%"], ["web1"], [2]),  # resumed after wave 1: still wave 2
        ([1, 1, 1], ["web1", "web2"], [3]),
        (["100%"], ["web1"], [1]),  # a wave partly done keeps its number
        ([2, 1], ["web1"], [1, 2]),
    ],
)
def test_a_resumed_plan_keeps_its_wave_numbers(
    sizes: list[int | str], done: list[str], numbers: list[int]
) -> None:
    plan = plan_waves(HOSTS, sizes, 0, done=done)
    assert [w.number for w in plan.waves] == numbers


@pytest.mark.parametrize(
    ("configured", "back", "waited"),
    [
        (15.0, False, 15.0),  # a new release: given up at the environment's timeout
        (15.0, True, BACK_READY_SECONDS),  # the old one, in an undo: given longer
        (120.0, True, 120.0),  # never shorter than the environment asks
    ],
)
def test_a_switch_back_waits_longer_for_the_old_release(
    tmp_path: Path, configured: float, back: bool, waited: float
) -> None:
    env = Environment("staging", tmp_path, 18080, "http://lb", "sqlite:////x/db.sqlite3",
                      settings=EnvironmentSettings(ready_timeout_seconds=configured))  # fmt: skip
    host = HostSettings(name="web1", address="10.0.0.1")
    [command] = DhashReleases(env).switch(host, "1.1.0", back=back)
    argv = shlex.split(command.rsplit("$PATH ", 1)[1].removesuffix("; } 9>&-"))
    assert json.loads(argv[argv.index("--spec") + 1])["ready_timeout"] == waited
