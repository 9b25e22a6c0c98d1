"""``dhash deploy``, ``dhash rollback`` and ``dhash canary`` on a fleet of real dhash hosts
behind a real HAProxy (tests/support/dhash_fleet.py: three network-namespace hosts, each an
sshd, its own release root and supervisord; the releases are this checkout's wheels, uploaded
and installed through pyinfra), on one PostgreSQL database, with a load generator (reads and
acknowledged writes) through the proxy.

One site for the module (its setup costs ~25 s), the scenarios in file order, each leaving the
fleet on one release. The heavy ones are one sampled group: ``make test`` runs one of them,
``make test-full`` every one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from dhash_rollout.canary.controller import CanaryState, read_ledger, read_state
from dhash_rollout.deploy.fleet import WaveExecutor, host_states
from dhash_rollout.deploy.waves import HostState, plan_waves
from dhash_rollout.monitor.ledger import read_rows
from dhash_rollout.runs.journal import RUN_PHASE, Journal, JournalRecord, Status
from dhash_rollout.runs.plan import Phase
from dhash_rollout.runs.schema import database_revision
from tests.support.dhash_fleet import AUTH, ENV, DhashSite, Load, dhash_fleet_site
from tests.support.netns_hosts import available, cut_off
from tests.support.postgres import PostgresServer
from tests.support.release_builds import CHECKOUT, checkout_head, dhash_bin, wheel_for
from tests.support.review_seed import decide_reviews, review_states

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


@pytest.mark.matrix(keep=1, group="rollout")  # make test: one of the eight per run
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
    assert gates[0].phase == "gate:2"  # the resumed run keeps the plan's wave numbers
    _fleet_gate_read_the_proxy(site, f"{run.deploy_id}-wave2-fleet")
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


@pytest.mark.matrix(keep=1, group="rollout")  # make test: one of the eight per run
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


def _wait_for(
    site: DhashSite, found: Callable[[JournalRecord], bool], after: int, timeout: float = 180,
    child: subprocess.Popen[str] | None = None,
) -> JournalRecord:  # fmt: skip
    """The first journal record past line ``after`` that ``found`` accepts (polled); the
    command ``child`` ending first fails at once, with what it said."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in list(_journal(site).records())[after:]:
            if found(record):
                return record
        if child is not None and child.poll() is not None:
            pytest.fail(f"the command ended ({child.returncode}): {child.communicate()[1][-3000:]}")
        time.sleep(0.02)
    raise AssertionError(f"no such journal record in {timeout} s")


def _stamp(record: JournalRecord) -> float:
    return datetime.fromisoformat(record.ts).timestamp()


@pytest.mark.matrix(keep=1, group="rollout")  # make test: one of the eight per run
def test_a_fleet_rollback_past_an_irreversible_migration_restores_once_and_keeps_every_write(
    site: DhashSite,
) -> None:
    """A deploy whose expand migration cannot be undone, its controller killed after the first
    wave (web1 on the new release, web2 and web3 never touched); ``dhash rollback`` must
    restore the shared database: every host stopped, the deploy's backup restored once, the
    untouched hosts started again, web1 switched back. That rollback is killed too, once web2
    is back and taking writes: a deploy is refused until the rollback is finished, and the
    rollback run again resumes without restoring over those writes."""
    began = time.monotonic()
    old = set(site.answering().values())
    assert len(old) == 1
    (was,) = old
    head = checkout_head()
    wheel = wheel_for("1.4.0", "irreversible")
    guarded = ["deploy", "--env", ENV, "--source", str(wheel), "--gates-config", str(GATES),
               "--time-scale", "10"]  # fmt: skip
    lines = len(list(_journal(site).records()))
    child = _dhash(site, *guarded)
    try:
        deployed = _wait_for(
            site, lambda r: r.phase == "host:web1" and r.status != "started", lines, timeout=240
        )
    finally:
        child.send_signal(signal.SIGKILL)  # the controller dies in wave 1's gate
        child.communicate(timeout=30)
    assert deployed.detail["state"] == "ready", deployed  # web1 on 1.4.0, in its gate
    assert database_revision(site.env.database_url) == "9001_irreversible_probe"
    assert site.answering() == {"web1": "1.4.0", "web2": was, "web3": was}
    # after the deploy's backup
    reviewed, decided = decide_reviews(site.url, AUTH, "f", 5, "fleet-")
    lines = len(list(_journal(site).records()))
    rollback = ["rollback", "--env", ENV, "--reason", "irreversible fleet drill", "--json"]
    with Load(site.url) as load:
        child = _dhash(site, *rollback)
        try:
            header = _wait_for(
                site, lambda r: r.phase == RUN_PHASE and r.detail.get("kind") == "rollback", lines
            )
            run_id = header.deploy_id
            _wait_for(
                site,
                lambda r: r.deploy_id == run_id and r.phase == "host:web2"
                and r.detail.get("state") == "ready",
                lines,
            )  # fmt: skip
        finally:
            child.send_signal(signal.SIGKILL)  # the rollback's controller dies mid-way too
            child.communicate(timeout=30)
        code, out, err = _run(site, "deploy", "--env", ENV, "--source", str(wheel), "--no-monitor")
        assert code == 1 and f"the rollback {run_id} was interrupted" in err, out + err
        code, out, err = _run(site, *rollback)  # the one command: it resumes
    assert code == 0, err + out
    result = json.loads(out)
    assert result["ok"] and result["run_id"] == run_id and result["plan"]["version"] == was
    assert site.answering() == dict.fromkeys(HOSTS, was)
    assert database_revision(site.env.database_url) == head
    records = [r for r in _journal(site).records() if r.deploy_id == run_id]
    restored = [r for r in records if r.phase == Phase.RESTORE and r.status == "done"]
    assert len(restored) == 1, restored  # once, and not again on resume
    deploy_run = _journal(site).run(deployed.deploy_id)
    assert deploy_run is not None and deploy_run.outcome == "failed"  # superseded
    assert restored[0].detail["backup"] == deploy_run.detail_of(Phase.BACKUP)["path"]
    done = _journal(site).run(run_id)
    assert done is not None and done.outcome == "done"
    assert done.params["fleet_touched"] == ["web1"]
    activated = done.detail_of(Phase.ACTIVATE)  # the resumed run brought back the rest
    back = activated["already_back"]  # web2, and web3 if its turn came before the kill landed
    assert "web2" in back and set(back) <= {"web2", "web3"}, activated
    locks = [i for i, r in enumerate(records) if r.phase == "lock" and r.status == "started"]
    resumed_at = locks[1]  # the resumed run's first record
    began_switch = any(r.phase == "host:web1" and r.detail.get("state") == "switching"
                       for r in records[:resumed_at])  # fmt: skip
    # web1 switched back by the resumed run; when the first run had begun its switch, that
    # switch may have landed (the resumed run finds web1 on the old release: started again) or
    # not (the kill came between the journaled "switching" and the flip: switched)
    actions = {"start", "switch"} if began_switch else {"switch"}
    web1 = activated["hosts"]["web1"]
    assert web1["action"] in actions and web1["version"] == was, activated
    assert set(activated["hosts"]) | set(back) == set(HOSTS), activated
    if "web3" in activated["hosts"]:  # never touched by the deploy: its release started again
        assert activated["hosts"]["web3"] == {"action": "start", "version": was}, activated
    states = [(r.phase, r.detail["state"]) for r in records if r.phase.startswith("host:")]
    for host in HOSTS:  # every host drained and stopped, then back
        mine = [s for p, s in states if p == f"host:{host}"]
        assert mine[:2] == ["draining", "stopped"] and mine[-1] == "ready", (host, mine)
    # the writes: the acknowledged ingests (web2's too, made after the first run's re-apply),
    # and the reviewers' decisions made after the backup
    assert len(load.acknowledged) > 5 and load.lost() == [], load.lost()
    with httpx.Client(base_url=site.url, headers=AUTH, timeout=10) as client:
        assert [i for i in reviewed if client.get(f"/v1/images/{i}").status_code != 200] == []
    assert review_states(site.env.database_url, set(decided)) == decided
    # only inside the journaled restore window may a request fail: from the first stop to
    # the resumed run's last host back
    start = next(r for r in records if r.phase == Phase.EXPORT_WRITES and r.status == "started")
    end = [r for r in records if r.phase == Phase.ACTIVATE and r.status == "done"][-1]
    window = (_stamp(start), _stamp(end))
    outside = [t for t in load.failed_at if not window[0] <= t <= window[1]]
    spread = (min(load.failed_at), max(load.failed_at)) if load.failed_at else (0.0, 0.0)
    print(
        f"\nfleet restore: {len(load.failed)} failed of {load.ok + len(load.failed)} requests "
        f"({sorted(set(load.failed))[:3]}), failures over {spread[1] - spread[0]:.1f} s inside "
        f"a journaled window of {window[1] - window[0]:.1f} s; {len(load.acknowledged)} "
        f"acknowledged ingests kept; {time.monotonic() - began:.0f} s"
    )
    assert outside == [], outside
    code, out, err = _run(site, "release", "status", "--env", ENV, "--json", timeout=120)
    assert code == 0, err
    shown = {h["name"]: (h["release"], h["proxy_status"], h["weight"]) for h in
             json.loads(out)["hosts"]}  # fmt: skip
    assert shown == dict.fromkeys(HOSTS, (was, "UP", 100))


@pytest.mark.matrix(keep=1, group="rollout")  # make test: one of the eight per run
def test_release_stop_then_start_brings_every_host_back_on_its_release(site: DhashSite) -> None:
    """``dhash release stop`` takes every host out of rotation and stops it; ``release start``
    must start each again on the release it names (its ``current`` did not move) and put it
    back, not find every host already on that release and do nothing."""
    before = site.answering()
    assert len(set(before.values())) == 1
    code, out, err = _run(site, "release", "stop", "--env", ENV)
    assert code == 0, out + err
    assert {s.status for s in site.runtime.servers("dhash")} != {"UP"}
    code, out, err = _run(site, "release", "start", "--env", ENV)
    assert code == 0, out + err
    assert site.answering() == before
    assert {s.name: s.status for s in site.runtime.servers("dhash")} == dict.fromkeys(HOSTS, "UP")


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


@pytest.mark.matrix(keep=1, group="rollout")  # make test: one of the eight per run
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


@pytest.mark.matrix(keep=1, group="rollout")  # make test: one of the eight per run
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
    waves = [r.phase for r in records if r.phase.startswith("wave:")]
    assert waves == ["wave:0", "wave:2"]  # the canary's own, then the plan's second
    gates = [r for r in records if r.phase.startswith("gate:")]
    assert len(gates) == 1 and gates[0].status == "done", gates  # between the waves
    assert set(gates[0].detail) == {"web2", "web3", "fleet", "errors"}
    code, out, err = _run(site, "release", "status", "--env", ENV, "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert f"canary: 1.2.0 on {state.host} beside {stable}: promoted" in shown["canary"]
    assert {h["name"]: h["release"] for h in shown["hosts"]} == dict.fromkeys(HOSTS, "1.2.0")


def _other_release(site: DhashSite) -> tuple[str, str]:
    """The release every host serves (each scenario leaves one) and a candidate beside it."""
    served = set(site.answering().values())
    assert len(served) == 1, served
    (stable,) = served
    return stable, "1.3.0" if stable != "1.3.0" else "1.2.0"


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (its engine steps), read from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        children = [c for c, p in parents.items() if p == parent]
        found += children
        todo += children
    return found


def _wait_gone(pids: list[int], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not [p for p in pids if Path(f"/proc/{p}").exists()]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the killed controller's steps {pids} still run after {timeout} s")


@pytest.mark.matrix(keep=1, group="rollout")  # make test: one of the eight per run
def test_a_canary_start_killed_while_its_host_switches_is_undone_by_canary_abort(
    site: DhashSite,
) -> None:
    """The controller dies with the canary host mid-switch (its engine step still in flight,
    no canary state written yet): ``dhash canary abort`` finds the open run, puts the canary
    host back, restores its weight, and the killed controller's late step cannot switch the
    host again after that (the switch's fence)."""
    began = time.monotonic()
    stable, candidate = _other_release(site)
    lines = len(list(_journal(site).records()))
    with Load(site.url) as load:
        child = _start(site, str(wheel_for(candidate)), "--step-minutes", "10", "--no-monitor",
                       "--release-setting", "DHASH_FAULT_HASH_LATENCY_SECONDS=0")  # fmt: skip
        try:
            switching = _wait_for(
                site, lambda r: r.phase == "host:web1" and r.detail.get("state") == "switching",
                lines, timeout=240, child=child,
            )  # fmt: skip
            time.sleep(0.3)  # its engine step on its way to the host
            steps = _descendants(child.pid)
        finally:
            child.send_signal(signal.SIGKILL)
            child.communicate(timeout=30)
        code, out, err = _run(site, "canary", "abort", "--env", ENV)
        assert code == 0, err + out
        assert "interrupted canary start" in err and "is undone" in err, err
        _wait_gone(steps)  # whatever the killed controller had sent has ended
        after = site.answering()
    assert after == dict.fromkeys(HOSTS, stable), after  # web1 back, and stays back
    assert _weights(site) == dict.fromkeys(HOSTS, ("UP", 100))
    assert load.failed == [], load.failed  # web1 was drained before its switch
    assert len(load.acknowledged) > 5 and load.lost() == []
    run = _journal(site).run(switching.deploy_id)
    assert run is not None and run.kind == "canary" and run.outcome == "failed"
    assert host_states(run, HOSTS) == {"web1": HostState.ROLLED_BACK, "web2": HostState.PENDING,
                                       "web3": HostState.PENDING}  # fmt: skip
    assert run.detail_of(Phase.INSTALL)["hosts"] == ["web1"]  # the others never touched
    fence = site.fleet.hosts[0].root / "agent.fence"
    print(f"\nkilled mid-switch, undone by canary abort: {len(steps)} steps in flight, "
          f"{load.ok} requests, 0 failed, fence {fence.read_text().strip()}; "
          f"{time.monotonic() - began:.0f} s")  # fmt: skip


@pytest.mark.matrix(keep=1, group="rollout")  # make test: one of the eight per run
def test_a_canary_promotion_killed_in_its_wave_is_resumed_by_the_same_command(
    site: DhashSite,
) -> None:
    """A good canary promoted; its controller dies while the promotion's wave switches web2
    and web3. ``dhash canary start`` again resumes the promotion where it stopped: every host
    on the candidate, the weights back, no failed request and no lost write."""
    began = time.monotonic()
    stable, candidate = _other_release(site)
    good = [str(wheel_for(candidate)), "--step-minutes", "0.1", "--no-monitor",
            "--release-setting", "DHASH_FAULT_HASH_LATENCY_SECONDS=0"]  # fmt: skip
    lines = len(list(_journal(site).records()))
    with Load(site.url) as load:  # reads, and every third request an acknowledged write
        killed = _start(site, *good)
        try:
            switching = _wait_for(
                site, lambda r: r.phase == "host:web2" and r.detail.get("state") == "switching",
                lines, timeout=240, child=killed,
            )  # fmt: skip
        finally:
            killed.send_signal(signal.SIGKILL)
            killed.communicate(timeout=30)
        state = read_state(site.env)
        assert state is not None and state.status == "promoting", state
        code, out, err = _run(site, "release", "status", "--env", ENV)
        assert code == 0 and "its promotion was interrupted" in out, err + out
        code, out, err = _run(site, "canary", "start", "--env", ENV, "--source", good[0],
                              "--steps", "50", "--interval", "1", *good[1:])  # fmt: skip
    assert code == 0, err[-3000:]
    assert f"resuming the promotion of {candidate}" in err, err
    assert site.answering() == dict.fromkeys(HOSTS, candidate)
    assert _weights(site) == dict.fromkeys(HOSTS, ("UP", 100))
    assert load.failed == [], load.failed
    assert load.seen == {stable, candidate}  # side by side, then the candidate alone
    assert len(load.acknowledged) > 10 and load.lost() == []
    run = _journal(site).run(switching.deploy_id)
    assert run is not None and run.outcome == "done", run
    assert host_states(run, HOSTS) == dict.fromkeys(HOSTS, HostState.READY)
    records = [r for r in _journal(site).records() if r.deploy_id == switching.deploy_id]
    web1 = [r.detail["state"] for r in records if r.phase == "host:web1"]
    assert web1 == ["draining", "switching", "checking", "ready"]  # never switched again
    web2 = [r.detail["state"] for r in records if r.phase == "host:web2"]
    assert web2[:2] == ["draining", "switching"] and web2[-1] == "ready", web2
    waves = [r.phase for r in records if r.phase.startswith("wave:")]
    assert waves == ["wave:0", "wave:2"], waves  # the canary's, then the resumed wave's
    ended = read_state(site.env)
    assert ended is not None and ended.status == "promoted", ended
    print(f"\npromotion killed mid-wave, resumed: {load.ok} requests, 0 failed, "
          f"{len(load.acknowledged)} writes kept; {time.monotonic() - began:.0f} s")  # fmt: skip
