"""``dhash deploy`` on a fleet of real dhash hosts behind a real HAProxy (tests/support/
dhash_fleet.py: three network-namespace hosts, each an sshd, its own release root and
supervisord; the releases are this checkout's wheels, uploaded and installed through pyinfra),
on one PostgreSQL database, with a load generator (reads and acknowledged writes) through the
proxy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from dhash_rollout.deploy.fleet import WaveExecutor, host_states
from dhash_rollout.deploy.waves import HostState, plan_waves
from dhash_rollout.monitor.ledger import read_rows
from dhash_rollout.runs.journal import Journal, Status
from dhash_rollout.runs.plan import Phase
from tests.support.dhash_fleet import ENV, DhashSite, Load, dhash_fleet_site
from tests.support.netns_hosts import available, cut_off
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
    """Three hosts on one PostgreSQL database (through its unix socket: the hosts' network
    namespaces do not share the controller's loopback)."""
    first = wheel_for("1.1.0")
    database = postgres_server.create_database("fleet")
    try:
        url = postgres_server.socket_url(database)
        with dhash_fleet_site(tmp_path_factory.mktemp("fleetlive"), HOSTS, first, url) as made:
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


def _run(site: DhashSite, *args: str, timeout: float = 300) -> tuple[int, str, str]:
    child = _dhash(site, *args)
    out, err = child.communicate(timeout=timeout)
    return child.returncode, out, err


def _journal(site: DhashSite) -> Journal:
    return Journal.for_root(site.env.root)


def _wait_for_record(site: DhashSite, phase: str, timeout: float = 180) -> None:
    """Until the journal has a ``done`` record of ``phase`` (polled every 20 ms)."""
    deadline = time.monotonic() + timeout
    path = _journal(site).path
    while time.monotonic() < deadline:
        if path.exists() and any(
            json.loads(line).get("phase") == phase and json.loads(line).get("status") == "done"
            for line in path.read_text().splitlines()
            if line.strip()
        ):
            return
        time.sleep(0.02)
    raise AssertionError(f"no {phase} record in {timeout} s")


@pytest.mark.matrix(keep=1, group="rollout")  # make test: one of the two rollouts per run
def test_a_fleet_deploy_killed_between_waves_resumes_with_its_gates_and_no_failed_request(
    site: DhashSite,
) -> None:
    wheel = wheel_for("1.2.0")
    deploy = ["deploy", "--env", ENV, "--source", str(wheel)]
    code, out, err = _run(site, *deploy, "--dry-run")
    assert code == 0, err
    assert "wave 1: web1" in out and "wave 2: web2, web3" in out, out
    assert site.answering() == dict.fromkeys(HOSTS, "1.1.0")  # the dry run changed nothing
    # The monitor's gates between waves: 60 nominal seconds per wave, 10 times faster.
    guarded = [*deploy, "--gates-config", str(GATES), "--time-scale", "10"]
    with Load(site.url) as load:
        child = _dhash(site, *guarded)
        try:
            _wait_for_record(site, "host:web1")  # web1 on 1.2.0: its gate has begun
        finally:
            child.send_signal(signal.SIGKILL)  # the controller dies between the waves
            child.communicate(timeout=30)
        run = _journal(site).last_run("deploy")
        assert run is not None and not run.finished
        killed = host_states(run, HOSTS)
        assert killed == {"web1": HostState.READY, "web2": HostState.PENDING,
                          "web3": HostState.PENDING}  # fmt: skip
        code, out, err = _run(site, *guarded, "--json")
    assert code == 0, err + out
    result = json.loads(out)
    assert result["resumed_from"] == run.deploy_id and result["ok"], result
    assert site.answering() == dict.fromkeys(HOSTS, "1.2.0")
    assert load.failed == [] and load.ok > 50, load.failed
    assert load.seen == {"1.1.0", "1.2.0"}  # old and new served side by side
    assert len(load.acknowledged) > 10 and load.lost() == []  # every acknowledged write kept
    done = _journal(site).run(run.deploy_id)
    assert done is not None and done.outcome == "done"
    assert host_states(done, HOSTS) == dict.fromkeys(HOSTS, HostState.READY)
    records = [r for r in _journal(site).records() if r.deploy_id == run.deploy_id]
    web1 = [r for r in records if r.phase == "host:web1"]
    assert len(web1) == 4  # draining, switching, checking, ready: not switched again on resume
    once = [r.phase for r in records if r.phase in ("backup", "install") and r.status == "done"]
    assert once == ["backup", "install"]  # the shared database and the install: once per run
    gates = [r for r in records if r.phase.startswith("gate:")]
    assert len(gates) == 1 and gates[0].status == "done", gates  # the resumed wave's gate
    assert set(gates[0].detail) == {"web2", "web3", "fleet", "errors"}  # each host, the fleet
    wave = gates[0].phase.removeprefix("gate:")  # the resumed run numbers its waves anew
    _fleet_gate_read_the_proxy(site, f"{run.deploy_id}-wave{wave}-fleet")
    assert all(s.up and s.weight == 100 for s in site.runtime.servers("dhash"))
    _rollback_puts_every_host_back(site)


def _fleet_gate_read_the_proxy(site: DhashSite, run_id: str) -> None:
    """The fleet's gate also read HAProxy's own exporter (``proxy.metrics_address``): its
    ``proxyErrorRate`` saw the load's responses through the proxy, none of them a 5xx (the
    load's own count of failures is 0 too)."""
    for path in site.base.rglob("fleet-gates/fleet/*.jsonl"):
        if path.name.endswith(".samples.jsonl"):
            continue
        rows = read_rows(path)
        start = next((r for r in rows if r.get("kind") == "start"), None)
        if start is None or start.get("run_id") != run_id:
            continue
        assert start["source"] == "scrape-fleet+haproxy", start
        proxy = [e for r in rows if r.get("kind") == "poll" for e in r["evaluations"]
                 if e["gate"] == "proxyErrorRate"]  # fmt: skip
        assert proxy and all(e["status"] in ("ok", "no-data") for e in proxy), proxy
        seen = [e for e in proxy if e["status"] == "ok"]
        assert seen and all(e["value"] == 0.0 and e["samples"] > 0 for e in seen), proxy
        assert "servers UP 3/3" in seen[-1]["detail"], seen[-1]
        return
    raise AssertionError(f"no fleet gate ledger of {run_id} under {site.base}")


def _rollback_puts_every_host_back(site: DhashSite) -> None:
    """``dhash rollback`` on the fleet the resumed deploy left on 1.2.0 (its end state, no
    rollout of its own): every host back on 1.1.0 one at a time through the proxy, journaled
    as a rollback run naming each host, under ingest load with no failed request."""
    with Load(site.url) as load:
        code, out, err = _run(site, "rollback", "--env", ENV, "--reason", "fleet drill", "--json")
    assert code == 0, err + out
    result = json.loads(out)
    assert result["ok"] and result["plan"]["version"] == "1.1.0", result
    assert site.answering() == dict.fromkeys(HOSTS, "1.1.0")
    assert load.failed == [] and len(load.acknowledged) > 5, load.failed
    assert load.lost() == []
    assert load.seen <= {"1.1.0", "1.2.0"} and "1.1.0" in load.seen
    rolled = _journal(site).run(result["run_id"])
    assert rolled is not None and rolled.kind == "rollback" and rolled.outcome == "done"
    assert rolled.params["from_version"] == "1.2.0" and rolled.params["to_version"] == "1.1.0"
    activated = rolled.detail_of(Phase.ACTIVATE)  # every host rolled, one at a time
    assert (activated["instance"], activated["previous"]) == ("web1,web2,web3", "1.2.0"), activated
    # its checks through the proxy (the fleet's url)
    assert rolled.status_of(Phase.HEALTH) == rolled.status_of(Phase.SMOKE) == "done"
    assert all(s.up and s.weight == 100 for s in site.runtime.servers("dhash"))


@pytest.mark.matrix(keep=1, group="rollout")  # make test: one of the two rollouts per run
def test_a_bad_release_stops_after_the_first_wave_and_undoes_that_host_only(
    site: DhashSite,
) -> None:
    before = site.answering()
    bad = wheel_for("1.3.0")
    with Load(site.url) as load:
        code, out, err = _run(
            site, "deploy", "--env", ENV, "--source", str(bad), "--no-monitor", "--json",
            "--release-setting", "DHASH_FAULT_HEALTH_FAILING=true",
        )  # fmt: skip
    assert code != 0, err
    result = json.loads(out)
    assert "stopped at wave 1" in result["error"] and "web1" in result["error"], result
    assert "back on the old release: web1" in result["error"]
    assert site.answering() == before  # web1 back, web2 and web3 never touched
    assert load.failed == []  # web1 was drained before its switch, never served the bad one
    assert load.acknowledged and load.lost() == []
    assert load.seen == set(before.values())
    run = _journal(site).run(result["run_id"])
    assert run is not None and run.outcome == "failed"
    states = host_states(run, HOSTS)
    assert states == {"web1": HostState.ROLLED_BACK, "web2": HostState.PENDING,
                      "web3": HostState.PENDING}  # fmt: skip
    assert all(s.up for s in site.runtime.servers("dhash"))


def test_release_status_shows_every_host_its_release_and_its_proxy_state(
    site: DhashSite,
) -> None:
    site.runtime.set_weight("dhash", "web3", 40)
    try:
        code, out, err = _run(site, "release", "status", "--env", ENV, "--json", timeout=120)
    finally:
        site.runtime.set_weight("dhash", "web3", 100)
    assert code == 0, err
    shown = {h["name"]: h for h in json.loads(out)["hosts"]}
    assert {n: (h["release"], h["proxy_status"]) for n, h in shown.items()} == {
        n: (v, "UP") for n, v in site.served().items()
    }
    assert shown["web3"]["weight"] == 40 and shown["web1"]["weight"] == 100


def test_a_host_lost_mid_wave_stops_the_rollout_in_a_known_state(
    site: DhashSite, tmp_path: Path
) -> None:
    before = site.served()
    web3 = next(h for h in site.fleet.hosts if h.name == "web3")
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("fleet-4", "run", "started", {"kind": "deploy"})

    def record(phase: str, status: Status, detail: Mapping[str, Any]) -> None:
        journal.append("fleet-4", phase, status, detail)
        if phase == "host:web3" and detail["state"] == "draining":
            cut_off(web3)  # web3 dies in its own wave, as its drain begins

    executor = WaveExecutor(site.hosts, record, "1.1.0", previous=before)
    try:
        with Load(site.url) as load:
            outcome = executor.run(plan_waves(HOSTS, [1, "100%"], 0, first="web3"))
    finally:
        cut_off(web3, down=False)
    assert not outcome.ok and outcome.stopped_at == 1
    assert "web3: switch" in str(outcome.reason), outcome.summary()  # which host, and why
    assert "connect" in str(outcome.reason), outcome.reason  # it could not be reached
    assert set(outcome.undo_failures) == {"web3"}  # named: it could not be put back
    assert outcome.states["web1"] == outcome.states["web2"] == HostState.PENDING  # untouched
    assert site.served() == before  # nothing was switched anywhere
    # Only what was in flight on web3 when it died may fail (HAProxy's server timeout), never
    # a 503: the other hosts stay in rotation.
    assert set(load.failed) <= {"504", "502"} and len(load.failed) <= 2, load.failed
    run = journal.run("fleet-4")
    assert run is not None
    assert host_states(run, HOSTS)["web3"] == HostState.FAILED
    site.runtime.ready("dhash", "web3", timeout=30)
