"""The fleet deploy's pure parts: the wave gate from the monitor's verdicts, the plan the
dry run prints, what the engine runs on a host (its quoting), and the target's registration."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog

from dhash_rollout.deploy.fleet import host_states
from dhash_rollout.deploy.fleet_run import MonitorGate, as_plan, gate_verdict, undo_interrupted
from dhash_rollout.deploy.waves import HostState, Migration, plan_waves
from dhash_rollout.environments import (
    Environment,
    EnvironmentSettings,
    HostSettings,
    ProxySettings,
)
from dhash_rollout.runs.context import RunContext
from dhash_rollout.runs.journal import Journal, RunState
from dhash_rollout.runs.monitoring import MonitorRequest, MonitorResult, Verdict
from dhash_rollout.runs.plan import Phase
from dhash_rollout.targets import FACTORIES
from dhash_rollout.targets.fleet.agent import HostSpec, activate_command, install_command


def _result(verdict: Verdict, reason: str = "") -> MonitorResult:
    return MonitorResult(verdict, reason or str(verdict))


@pytest.mark.parametrize(
    ("verdicts", "policy", "stops"),
    [
        ({"web1": Verdict.PASSED, "fleet": Verdict.PASSED}, "succeed", []),
        ({"web1": Verdict.FAILED, "fleet": Verdict.PASSED}, "succeed", ["web1"]),
        ({"web1": Verdict.PASSED, "fleet": Verdict.FAILED}, "succeed", ["fleet"]),
        ({"web1": Verdict.INCONCLUSIVE, "fleet": Verdict.PASSED}, "succeed", []),
        ({"web1": Verdict.INCONCLUSIVE, "fleet": Verdict.PASSED}, "fail", ["web1"]),
        ({"web1": Verdict.INTERRUPTED}, "succeed", ["web1"]),  # never verified: stops
        ({"web1": Verdict.FAILED, "web2": Verdict.FAILED}, "succeed", ["web1", "web2"]),
    ],
)
def test_the_wave_gate_stops_on_any_host_or_the_fleet_failing(
    verdicts: dict[str, Verdict], policy: str, stops: list[str]
) -> None:
    reason = gate_verdict({n: _result(v, f"p95 of {n}") for n, v in verdicts.items()}, policy)
    if not stops:
        assert reason is None
        return
    assert reason is not None
    assert [part.split(":")[0] for part in reason.split("; ")] == stops
    assert all(f"p95 of {n}" in reason for n in stops)  # the monitor's own reason is kept


def _env(tmp_path: Path) -> Environment:
    return Environment(
        name="staging", root=tmp_path, port=18081, url="http://127.0.0.1:18081",
        database_url="sqlite:////srv/db.sqlite3", api_token="tok en'x",
        settings=EnvironmentSettings(release_deps="shared", shutdown_grace_seconds=2.0),
    )  # fmt: skip


def test_the_dry_run_plan_names_the_waves_and_where_the_migrations_go(tmp_path: Path) -> None:
    waves = plan_waves(
        ["web1", "web2", "web3", "web4"], [1, "50%"], 0,
        pending=[Migration("0004"), Migration("0005", contract=True)],
    )  # fmt: skip
    plan = as_plan(_env(tmp_path), "1.2.0", waves, installed=True)
    phases = [s.phase for s in plan.steps]
    assert phases == [Phase.LOCK, Phase.BACKUP, Phase.INSTALL, Phase.MIGRATE, Phase.WAVES,
                      Phase.WAVES, Phase.WAVES, Phase.CONTRACT]  # fmt: skip
    actions = [s.action for s in plan.steps]
    assert actions[3] == "migrate (expand) to 0004: 0004"
    assert actions[4].startswith("wave 1: web1 ") and actions[5].startswith("wave 2: web2, web3")
    assert actions[7] == "migrate (contract) to 0005: 0005"
    no_contract = as_plan(_env(tmp_path), "1.2.0", plan_waves(["web1"], [1], 0), installed=True)
    assert no_contract.step(Phase.CONTRACT).run is False
    assert no_contract.step(Phase.MIGRATE).run is False  # nothing pending to expand
    unknown = as_plan(_env(tmp_path), "1.2.0", plan_waves(["web1"], [1], 0), installed=False)
    assert unknown.step(Phase.MIGRATE).run is True  # not read yet: it runs (idempotent)
    assert any("not installed yet" in w for w in unknown.warnings)


def test_a_resumed_plan_skips_the_hosts_already_on_the_release(tmp_path: Path) -> None:
    waves = plan_waves(["web1", "web2", "web3"], [1, "100%"], 0, done=["web1"])
    plan = as_plan(_env(tmp_path), "1.2.0", waves, installed=True)
    assert [s.action.split(" (")[0] for s in plan.steps if s.phase == Phase.WAVES] == [
        "wave 2: web2, web3"
    ]  # numbered as in the whole plan
    assert "already on 1.2.0: web1" in plan.warnings


def test_the_host_commands_carry_the_spec_intact_through_the_shell(tmp_path: Path) -> None:
    host = HostSettings(name="web1", address="10.0.0.1", root="/srv/my dhash",
                        python="/opt/py 3/bin/python3")  # fmt: skip
    spec = HostSpec.for_host(host, _env(tmp_path))
    install = shlex.split(install_command(host, spec, "dhash_service-1.2.0-py3-none-any.whl",
                                          {"DHASH_FAULT_HEALTH_FAILING": "true"}))  # fmt: skip
    assert install[0] == "PYTHONPATH=/srv/my dhash/incoming/dhash_service-1.2.0-py3-none-any.whl"
    assert install[1] == "/opt/py 3/bin/python3"
    sent = json.loads(install[install.index("--spec") + 1])
    assert HostSpec(**sent) == spec and sent["api_token"] == "tok en'x"
    assert sent["database_url"] == "sqlite:////srv/db.sqlite3" and sent["port"] == 18080
    assert json.loads(install[-1]) == {"DHASH_FAULT_HEALTH_FAILING": "true"}
    activate = activate_command(host, spec, "1.2.0")
    assert "'/srv/my dhash/releases/1.2.0/venv/bin/python'" in activate  # its own toolkit
    assert "PATH='/opt/py 3/bin':$PATH" in activate  # supervisord of the shared layer


def test_the_fleet_target_is_registered() -> None:
    assert set(FACTORIES) >= {"local", "fleet"}


class _Hosts:
    """The host side, recording what it was asked (the real one: tests/integration)."""

    def __init__(self, unreachable: frozenset[str] = frozenset()) -> None:
        self.unreachable = unreachable
        self.calls: list[tuple[str, str, str]] = []

    def drain(self, host: str) -> str | None:
        self.calls.append(("drain", host, ""))
        return None

    def switch(
        self, hosts: Sequence[str], version: str, *, back: bool = False
    ) -> dict[str, str | None]:
        self.calls += [("switch back" if back else "switch", h, version) for h in hosts]
        return {h: ("could not connect over SSH" if h in self.unreachable else None) for h in hosts}

    def check(self, hosts: Sequence[str]) -> dict[str, str | None]:
        return dict.fromkeys(hosts)

    def ready(self, host: str) -> str | None:
        self.calls.append(("ready", host, ""))
        return None


def _killed_run(tmp_path: Path, states: dict[str, str]) -> tuple[Journal, RunState]:
    journal = Journal(tmp_path / "journal.jsonl")
    params = {"kind": "deploy", "version": "1.2.0",
              "from_versions": {"web1": "1.1.0", "web2": "1.1.0", "web3": "1.0.9"}}  # fmt: skip
    journal.append("deploy-1", "run", "started", params)
    for host, state in states.items():
        journal.append("deploy-1", f"host:{host}", "started", {"state": state, "wave": 1})
    run = journal.run("deploy-1")
    assert run is not None and not run.finished
    return journal, run


def test_undoing_a_killed_run_puts_back_the_touched_hosts_only(tmp_path: Path) -> None:
    journal, run = _killed_run(tmp_path, {"web1": "ready", "web3": "switching"})
    hosts = _Hosts()
    outcome = undo_interrupted(run, hosts, ["web1", "web2", "web3"], journal, lambda _m: None)
    assert outcome.ok and set(outcome.undone) == {"web1", "web3"}
    switched = {(h, v) for kind, h, v in hosts.calls if kind == "switch back"}  # patient
    assert switched == {("web1", "1.1.0"), ("web3", "1.0.9")}  # each to what it served
    assert not any(h == "web2" for _, h, _ in hosts.calls)  # never touched: left alone
    # web3 (out of rotation mid-switch) goes back first, web1 (serving) after it
    assert [h for kind, h, _ in hosts.calls if kind == "switch back"] == ["web3", "web1"]
    closed = journal.run("deploy-1")
    assert closed is not None and closed.outcome == "failed"
    assert host_states(closed, ["web1", "web2", "web3"]) == {
        "web1": HostState.ROLLED_BACK, "web2": HostState.PENDING, "web3": HostState.ROLLED_BACK
    }  # fmt: skip


def test_a_host_that_cannot_be_put_back_is_named(tmp_path: Path) -> None:
    journal, run = _killed_run(tmp_path, {"web1": "ready", "web2": "ready"})
    hosts = _Hosts(unreachable=frozenset({"web2"}))
    outcome = undo_interrupted(run, hosts, ["web1", "web2", "web3"], journal, lambda _m: None)
    assert not outcome.ok and outcome.undone == ("web1",)
    assert "could not connect" in outcome.undo_failures["web2"]
    assert "NOT put back: web2" in outcome.summary()


class _Watches:
    """A DeployMonitor that notes where each watch keeps its ledgers and crashes on one."""

    def __init__(self, crash: str) -> None:
        self.crash = crash
        self.dirs: dict[str, Path] = {}
        self.requests: dict[str, MonitorRequest] = {}

    def watch(self, request: MonitorRequest, events: object, clock: object) -> MonitorResult:
        name = request.run_id.rsplit("-", 1)[-1]
        self.dirs[name] = request.log_dir
        self.requests[name] = request
        if name == self.crash:
            raise RuntimeError("ledger mixed up")
        return _result(Verdict.PASSED)


def test_the_wave_gate_fails_when_a_watch_crashes_and_keeps_each_watch_apart(
    tmp_path: Path,
) -> None:
    hosts = {n: HostSettings(name=n, address=f"10.0.0.{i + 1}") for i, n in enumerate(["a", "b"])}
    target = SimpleNamespace(
        hosts=SimpleNamespace(hosts=hosts), waves=SimpleNamespace(gate_seconds=1.0),
        proxy=ProxySettings(runtime_api="/run/h.sock", url="http://lb:80",
                            metrics_address="127.0.0.1:8405"),
    )  # fmt: skip
    env = _env(tmp_path)
    ctx = RunContext(
        "deploy", env, cast(Any, target), Journal(tmp_path / "j.jsonl"), "deploy-1", tmp_path,
        tmp_path / "logs", tmp_path / "backups", structlog.get_logger(), lambda _m: None,
    )  # fmt: skip
    monitor = _Watches(crash="b")
    gate = MonitorGate(monitor, ctx, cast(Any, target), "1.2.0", "1.1.0", 1.0)
    reason = gate(plan_waves(["a", "b"], ["100%"], 0).waves[0])
    assert reason == "b: the monitor failed: RuntimeError: ledger mixed up"  # not a pass
    assert len(set(monitor.dirs.values())) == 3  # a, b and the fleet: one ledger directory each
    # the fleet's gate reads the proxy's exporter too; a host's gate reads its host alone
    fleet, host = monitor.requests["fleet"], monitor.requests["a"]
    assert (fleet.proxy_metrics_url, fleet.proxy_backend) == (
        "http://127.0.0.1:8405/metrics",
        "dhash",
    )
    assert host.proxy_metrics_url is None and host.fleet_hosts == ()
