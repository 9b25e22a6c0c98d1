"""The host connector through pyinfra against real SSH hosts: three network namespaces on a
bridge, each running Debian's sshd (tests/support/netns_hosts.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dhash_rollout.environments import HostSettings
from dhash_rollout.targets.fleet.engine import EngineError, run_step
from tests.support.netns_hosts import Fleet, available, namespace_fleet

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with namespace_fleet(tmp_path_factory.mktemp("fleet"), ["web1", "web2", "web3"]) as made:
        yield made


def _settings(fleet: Fleet) -> list[HostSettings]:
    return [
        HostSettings(name=h.name, address=h.address, ssh_key=str(fleet.client_key),
                     root=str(h.root))
        for h in fleet.hosts
    ]  # fmt: skip


def test_a_step_runs_each_hosts_own_commands_on_that_host(fleet: Fleet, tmp_path: Path) -> None:
    hosts = _settings(fleet)
    commands = {
        h.name: [f"mkdir -p {h.root}/step", f"ip -o -4 addr show scope global > {h.root}/step/ip"]
        for h in hosts
    }
    results = run_step(
        hosts, commands, step="probe", known_hosts=tmp_path / "known_hosts", parallel=3
    )
    assert all(r.ok for r in results.values()), results
    for host in fleet.hosts:
        # the address the command saw is the namespace's own: it ran on that host
        assert f" {host.address}/24 " in (host.root / "step" / "ip").read_text()
    assert len((tmp_path / "known_hosts").read_text().splitlines()) == 3  # keys recorded


def test_a_failing_command_fails_its_host_only_and_says_why(fleet: Fleet, tmp_path: Path) -> None:
    hosts = _settings(fleet)
    commands = {h.name: ["echo fine"] for h in hosts}
    commands["web2"] = ["echo about to fail", "echo 'no release 9.9' >&2; exit 3"]
    results = run_step(hosts, commands, step="switch", known_hosts=tmp_path / "kh", parallel=3)
    assert {n: r.ok for n, r in results.items()} == {"web1": True, "web2": False, "web3": True}
    assert results["web2"].error is not None and "no release 9.9" in results["web2"].error
    assert results["web1"].output == "fine"


def test_an_unreachable_host_is_reported_by_name(fleet: Fleet, tmp_path: Path) -> None:
    good = _settings(fleet)[0]
    gone = good.model_copy(update={"name": "web9", "address": fleet.gateway, "ssh_port": 1})
    results = run_step(
        [good, gone], {"web1": ["true"], "web9": ["true"]}, step="health",
        known_hosts=tmp_path / "kh", connect_timeout=2,
    )  # fmt: skip
    assert results["web1"].ok
    assert not results["web9"].ok and "connect" in str(results["web9"].error)


def test_a_step_without_commands_for_a_host_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="no commands for web2"):
        run_step(_settings(fleet)[:2], {"web1": ["true"]}, step="x", known_hosts=tmp_path / "k")
