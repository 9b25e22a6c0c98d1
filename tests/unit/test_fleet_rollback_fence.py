"""A fleet rollback's host steps, without the hosts: each stop and switch is fenced on the host
(a killed controller's step in flight cannot land after a resumed run's), and the steps to a
release the host served wait the longer readiness of a switch back.

The "host" is a temp root whose release and ``current`` Pythons are scripts appending to a
journal; the commands are the real ones :class:`DhashReleases` builds, run by ``sh``."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from dhash_rollout.environments import Environment, EnvironmentSettings, HostSettings, ProxySettings
from dhash_rollout.rollback.fleet import FleetHostSteps
from dhash_rollout.rollback.fleet_plan import HostFacts, plan_fleet_restore, plan_serve_again
from dhash_rollout.targets.fleet import payload
from dhash_rollout.targets.fleet.engine import HostResult
from dhash_rollout.targets.fleet.payload import DhashReleases
from dhash_rollout.targets.fleet.target import FleetTarget
from dhash_service.errors import NotFound

OLD, NEW = "1.1.0", "2.0.0"


def _fake_python(path: Path, journal: Path, what: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\necho "{what}" >> {journal}\n')
    path.chmod(0o755)


@pytest.fixture
def host(tmp_path: Path) -> tuple[HostSettings, DhashReleases, Path]:
    root = tmp_path / "web1"
    journal = tmp_path / "journal"
    for version in (OLD, NEW):
        _fake_python(root / "releases" / version / "venv/bin/python", journal, f"on {version}")
    _fake_python(root / "current/venv/bin/python", journal, "stop")
    env = Environment("staging", tmp_path, 18080, "http://lb", "sqlite:////x/db.sqlite3",
                      settings=EnvironmentSettings(ready_timeout_seconds=15.0))  # fmt: skip
    return (
        HostSettings(name="web1", address="10.0.0.1", root=str(root)),
        DhashReleases(env),
        journal,
    )


def _stop_command(monkeypatch: pytest.MonkeyPatch, releases: DhashReleases, h: HostSettings) -> str:
    """The shutdown as the engine would run it on the host (built, not yet sent)."""
    sent: dict[str, Sequence[str]] = {}

    def engine(hosts: Any, commands: Mapping[str, Sequence[str]], **_: Any) -> Any:
        sent.update(commands)
        return {n: HostResult(n, True, None, "") for n in commands}

    monkeypatch.setattr(payload, "run_step", engine)
    releases.shutdown([h], known_hosts=Path("/nonexistent"))
    [command] = sent[h.name]
    return command


def _lands(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30,
                          check=False)  # fmt: skip


# Each row: steps in the order they were *sent* (a killed controller's first), then the order
# they *land* on the host, and what the host's journal shows.
@pytest.mark.parametrize(
    ("sent", "landing", "journal"),
    [
        # in order: the stop before the restore, then the start after it
        (["stop", f"switch {OLD}"], [0, 1], ["stop", f"on {OLD}"]),
        # a killed deploy's switch to the new release lands after the rollback's stop: refused,
        # so no host serves (and writes) while the database is restored
        ([f"switch {NEW}", "stop"], [1, 0], ["stop"]),
        # a killed rollback's stop lands after the resumed run started the host: refused
        (["stop", f"switch {OLD}"], [1, 0], [f"on {OLD}"]),
        # a killed rollback's switch back lands after the resumed run's own: refused, once ran
        ([f"switch {OLD}", f"switch {OLD}"], [1, 0], [f"on {OLD}"]),
    ],
)
def test_a_rollback_step_sent_before_one_that_ran_on_the_host_is_refused(
    host: tuple[HostSettings, DhashReleases, Path],
    monkeypatch: pytest.MonkeyPatch,
    sent: list[str],
    landing: list[int],
    journal: list[str],
) -> None:
    h, releases, log = host
    commands = [
        _stop_command(monkeypatch, releases, h)
        if step == "stop"
        else releases.switch(h, step.split()[1], back=True)[0]
        for step in sent
    ]
    first, late = (_lands(commands[i]) for i in landing)
    assert first.returncode == 0, first.stderr
    if landing == sorted(landing):  # in the order sent: both run
        assert late.returncode == 0, late.stderr
    else:  # the one sent first landed last: refused
        assert late.returncode == 1 and "superseded" in late.stderr, late
    assert log.read_text().split("\n")[:-1] == journal


class _Hosts:
    """In-memory hosts: every switch and whether it was a switch back."""

    def __init__(self) -> None:
        self.switched: list[tuple[str, str, bool]] = []

    def switch(self, hosts: Sequence[str], version: str, *, back: bool = False) -> dict[str, Any]:
        self.switched += [(h, version, back) for h in hosts]
        return dict.fromkeys(hosts)

    def check(self, hosts: Sequence[str]) -> dict[str, Any]:
        return dict.fromkeys(hosts)

    def drain(self, host: str) -> None:
        return None

    def ready(self, host: str) -> None:
        return None


def test_a_restores_steps_to_a_release_that_served_wait_as_a_switch_back() -> None:
    hosts = _Hosts()
    steps = FleetHostSteps(cast(Any, SimpleNamespace(hosts=hosts)), lambda *_: None, print)
    plan = plan_fleet_restore(
        [HostFacts("web1", NEW, True, previous=OLD), HostFacts("web2", OLD, False),
         HostFacts("web3", NEW, True, previous="0.9.0")],
        OLD,
    )  # fmt: skip
    assert steps.bring_back(plan) == {}
    assert hosts.switched == [("web2", OLD, True), ("web1", OLD, True), ("web3", OLD, False)]
    steps.bring_back(plan_serve_again({"web1": NEW}))
    assert hosts.switched[-1] == ("web1", NEW, True)


def test_a_plain_fleet_rollback_switches_back_only_the_hosts_it_names(tmp_path: Path) -> None:
    web = tuple(HostSettings(name=f"web{i}", address=f"10.0.0.{i}") for i in (1, 2))
    env = Environment("staging", tmp_path, 18080, "http://lb", "sqlite:////x/db.sqlite3",
                      settings=EnvironmentSettings(target="fleet", hosts=web, proxy=ProxySettings(
                          runtime_api=str(tmp_path / "sock"))))  # fmt: skip
    target = FleetTarget(env)
    hosts = _Hosts()
    target.hosts = cast(Any, hosts)
    assert target.roll(["web1", "web2"], OLD, lambda _m: None, back={"web2"}) == {}
    assert hosts.switched == [("web1", OLD, False), ("web2", OLD, True)]


def test_release_start_brings_back_only_the_hosts_out_of_rotation_on_their_release(
    tmp_path: Path,
) -> None:
    """After ``dhash release stop`` every host still names its release: start must switch
    the stopped ones to it (as a switch back), not find nothing to do."""
    web = tuple(HostSettings(name=f"web{i}", address=f"10.0.0.{i}") for i in (1, 2, 3))
    env = Environment("staging", tmp_path, 18080, "http://lb", "sqlite:////x/db.sqlite3",
                      settings=EnvironmentSettings(target="fleet", hosts=web, proxy=ProxySettings(
                          runtime_api=str(tmp_path / "sock"))))  # fmt: skip
    target = FleetTarget(env)
    hosts = _Hosts()
    target.hosts = cast(Any, hosts)
    proxy = {"web1": "MAINT", "web2": "UP", "web3": "DOWN"}
    statuses = [SimpleNamespace(name=n, release=OLD, proxy_status=p) for n, p in proxy.items()]
    target.host_statuses = lambda: cast(Any, statuses)  # type: ignore[method-assign]
    target.release = lambda version: cast(Any, SimpleNamespace(version=version))  # type: ignore[method-assign]
    started = target.start()
    assert hosts.switched == [("web1", OLD, True), ("web3", OLD, True)]
    assert started.changed and started.instance == "web1,web3" and started.version == OLD
    statuses[0].release = NEW  # the hosts differ: nothing to start them on
    with pytest.raises(NotFound):
        target.start()
