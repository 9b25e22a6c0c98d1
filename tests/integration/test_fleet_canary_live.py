"""``dhash canary`` on a fleet of real dhash hosts behind a real HAProxy (tests/support/
dhash_fleet.py: three network-namespace hosts, each an sshd, its own release root and
supervisord, on one PostgreSQL database): the candidate on one canary host, its share an
HAProxy weight, judged against the stable hosts' own metrics; a load generator (reads and
acknowledged writes) through the proxy all along."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from dhash_rollout.canary.controller import CanaryState, read_ledger, read_state
from dhash_rollout.deploy.fleet import host_states
from dhash_rollout.deploy.waves import HostState
from dhash_rollout.runs.journal import Journal
from dhash_rollout.runs.plan import Phase
from tests.support.dhash_fleet import ENV, DhashSite, Load, dhash_fleet_site
from tests.support.netns_hosts import available
from tests.support.postgres import PostgresServer
from tests.support.release_builds import CHECKOUT, dhash_bin, wheel_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]
HOSTS = ["web1", "web2", "web3"]
GATES = CHECKOUT / "quality-gates-config.json"


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: PostgresServer
) -> Iterator[DhashSite]:
    """Three hosts on 1.1.0, on one PostgreSQL database (through its unix socket)."""
    database = postgres_server.create_database("fleetcanary")
    try:
        url = postgres_server.socket_url(database)
        tmp = tmp_path_factory.mktemp("fleetcanary")
        with dhash_fleet_site(tmp, HOSTS, wheel_for("1.1.0"), url) as made:
            yield made
    finally:
        postgres_server.drop_database(database)


def _dhash(site: DhashSite, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    env["DHASH_ENVIRONMENTS_FILE"] = str(site.base / "dhash-environments.toml")
    return subprocess.Popen(
        [dhash_bin(), *args], cwd=site.base, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def _run(site: DhashSite, *args: str, timeout: float = 120) -> tuple[int, str, str]:
    child = _dhash(site, *args)
    out, err = child.communicate(timeout=timeout)
    return child.returncode, out, err


def _running(site: DhashSite, version: str, child: subprocess.Popen[str]) -> CanaryState:
    """The canary's state once it serves beside stable (the controller's start done)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = read_state(site.env)
        if state is not None and state.version == version and state.status == "running":
            return state
        if child.poll() is not None:
            pytest.fail(f"canary start ended ({child.returncode}): {child.communicate()[1]}")
        time.sleep(0.1)
    child.kill()
    pytest.fail(f"no running canary of {version}: {child.communicate()[1][-3000:]}")


def _weights(site: DhashSite) -> dict[str, tuple[str, int]]:
    return {s.name: (s.status, s.weight) for s in site.runtime.servers("dhash")}


def _start(site: DhashSite, wheel: str, *args: str) -> subprocess.Popen[str]:
    return _dhash(
        site, "canary", "start", "--env", ENV, "--source", wheel, "--steps", "50",
        "--interval", "1", *args,
    )  # fmt: skip


@pytest.mark.matrix(keep=1, group="fleetcanary")  # make test: one of the two canaries per run
def test_a_slow_canary_is_aborted_by_the_judge_with_only_the_canary_host_touched(
    site: DhashSite,
) -> None:
    before = site.answering()
    stable = before["web2"]
    slow = "DHASH_FAULT_HASH_LATENCY_SECONDS=0.3"  # every hash on the canary host, slept
    with Load(site.url) as load:
        child = _start(site, str(wheel_for("1.3.0")), "--step-minutes", "10",
                       "--no-monitor", "--release-setting", slow)  # fmt: skip
        state = _running(site, "1.3.0", child)
        # 50 %: the canary host's weight is the two stable hosts' together
        assert state.host == "web1"
        assert _weights(site) == {"web1": ("UP", 200), "web2": ("UP", 100), "web3": ("UP", 100)}
        judged = time.monotonic()
        with Load(site.url, ingest_every=1) as uploads:  # every request a hash: samples
            try:
                _out, err = child.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                child.kill()
                pytest.fail(f"the judge did not abort the slow canary: {child.communicate()[1]}")
        print(f"judged and aborted in {time.monotonic() - judged:.1f} s")
    assert child.returncode == 1, err[-3000:]  # aborted by the judgement
    print("\n".join(line for line in err.splitlines() if "✓" in line or "abort" in line))
    ended = read_state(site.env)
    assert ended is not None and ended.status == "aborted", ended
    assert "hash time" in ended.reason or "P95" in ended.reason, ended.reason
    assert site.answering() == before, ended.reason  # web1 back, web2 and web3 never switched
    assert _weights(site) == dict.fromkeys(HOSTS, ("UP", 100))  # weights restored
    polls = read_ledger(site.env)  # the canary host's own metrics, and stable's summed
    canary = sum(p.canary.extractions for p in polls)
    print(f"{len(polls)} polls, extractions canary {canary}, "
          f"stable {sum(p.stable.extractions for p in polls)}")  # fmt: skip
    assert canary > 10 and "1.3.0" in load.seen and stable in load.seen  # it really served
    assert load.failed == uploads.failed == [], (load.failed, uploads.failed)
    acknowledged = load.acknowledged + uploads.acknowledged
    assert len(acknowledged) > 10 and load.lost() == uploads.lost() == []
    run = Journal.for_root(site.env.root).run(state.run_id)
    assert run is not None and run.kind == "canary" and run.outcome == "failed"
    assert host_states(run, HOSTS) == {"web1": HostState.ROLLED_BACK, "web2": HostState.PENDING,
                                       "web3": HostState.PENDING}  # fmt: skip
    assert run.status_of(Phase.BACKUP) == "done"  # the shared database, once
    assert run.detail_of(Phase.INSTALL)["hosts"] == ["web1"]  # the others never touched


@pytest.mark.matrix(keep=1, group="fleetcanary")  # make test: one of the two canaries per run
def test_a_good_canary_killed_once_is_resumed_and_promoted_to_every_host_in_waves(
    site: DhashSite,
) -> None:
    stable = site.answering()["web2"]
    good = [
        str(wheel_for("1.2.0")), "--step-minutes", "0.1", "--gates-config", str(GATES),
        "--monitor-time-scale", "10", "--release-setting", "DHASH_FAULT_HASH_LATENCY_SECONDS=0",
    ]  # fmt: skip
    with Load(site.url) as load, Load(site.url, ingest_every=1) as uploads:
        killed = _start(site, *good)
        state = _running(site, "1.2.0", killed)
        killed.kill()  # the controller dies; the canary host keeps its release and weight
        killed.communicate(timeout=30)
        code, out, err = _run(site, "release", "status", "--env", ENV)
        assert code == 0, err
        assert f"canary: 1.2.0 on {state.host} beside {stable}: interrupted at 50%" in out, out
        child = _start(site, *good)  # the same command again: resumed from the state
        deadline = time.monotonic() + 60
        while not any(r.deploy_id == state.run_id and r.detail.get("resumed")
                      for r in Journal.for_root(site.env.root).records()):  # fmt: skip
            assert time.monotonic() < deadline and child.poll() is None, child.communicate()
            time.sleep(0.1)
        code, out, err = _run(site, "canary", "status", "--env", ENV)
        assert code == 0, err
        assert f"canary 1.2.0 on host {state.host} beside stable {stable}" in out, out
        assert " 200" in out and "UP" in out, out  # the canary host's HAProxy weight
        try:
            _out, err = child.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            child.kill()
            pytest.fail(f"the canary was not promoted: {child.communicate()[1][-3000:]}")
    assert child.returncode == 0, err[-3000:]
    print("\n".join(line for line in err.splitlines() if "✓" in line))
    assert site.answering() == dict.fromkeys(HOSTS, "1.2.0")
    assert _weights(site) == dict.fromkeys(HOSTS, ("UP", 100))
    assert load.failed == uploads.failed == [], (load.failed, uploads.failed)
    assert load.seen == {stable, "1.2.0"}
    acknowledged = load.acknowledged + uploads.acknowledged
    assert len(acknowledged) > 10 and load.lost() == uploads.lost() == []
    run = Journal.for_root(site.env.root).run(state.run_id)
    assert run is not None and run.outcome == "done", run
    assert host_states(run, HOSTS) == dict.fromkeys(HOSTS, HostState.READY)
    records = [r for r in Journal.for_root(site.env.root).records()
               if r.deploy_id == state.run_id]  # fmt: skip
    web1 = [r.detail["state"] for r in records if r.phase == "host:web1"]
    assert web1 == ["draining", "switching", "checking", "ready"]  # switched once, as canary
    gates = [r for r in records if r.phase.startswith("gate:")]
    assert len(gates) == 1 and gates[0].status == "done", gates  # between the waves
    assert set(gates[0].detail) == {"web2", "web3", "fleet", "errors"}
    code, out, err = _run(site, "release", "status", "--env", ENV, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert f"canary: 1.2.0 on {state.host} beside {stable}: promoted" in shown["canary"]
    assert {h["name"]: h["release"] for h in shown["hosts"]} == dict.fromkeys(HOSTS, "1.2.0")
