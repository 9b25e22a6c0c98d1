"""`dhash canary` end to end on the local target, one site for the module (1.0.0 deployed,
2.0.0 installed: it adds a nullable column), under load throughout, in this order (each test
starts where the last left it):

1. a canary of 2.0.0 made really worse (its own release setting adds hash latency on the real
   code path): the database is backed up and 2.0.0's expand-only migration runs, then the judge
   aborts it on its own metrics; 1.0.0 keeps serving, on the expanded schema;
2. a canary of 2.0.0 (the fault off) whose controller is killed is visible as interrupted
   (`release status`, the journal), refuses a rollback meanwhile, is resumed by `canary start`
   again and then aborted by `dhash canary abort` from another process: stable untouched;
3. a canary of 2.0.0 whose controller is killed and whose candidate stops meanwhile is aborted
   to stable by the next `canary start` (nothing to resume);
4. (one of the two, sampled) a `canary start` killed while its candidate boots is cleaned up by
   the next start, whose canary, without traffic, is held inconclusive (exit 5) and aborted by
   an operator; or a canary promoted by `dhash canary promote` from another terminal, failed by
   the post-deploy monitor on its real hash time and rolled back to 1.0.0;
5. a canary of 2.0.0 stepped 25 -> 50 % and promoted by the judgement, then watched by the
   post-deploy monitor's window (time-scaled), journaled like a deploy; `release status`'s last
   deploy is that promotion.

Zero failed requests to the clients through the tests under load (1, 2, 4b, 5)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dhash_rollout.canary.controller import read_ledger, read_state
from dhash_rollout.runs.journal import JournalRecord
from dhash_rollout.runs.schema import database_revision
from dhash_rollout.targets.local.supervisor import ACTIVE_STATES, SLOTS
from tests.integration.monitor_support import gates_file
from tests.support.load import LoadGenerator
from tests.support.release_builds import CHECKOUT, dhash_bin, dhash_env, wheel_for
from tests.support.rollout_site import TOKEN, Site

pytestmark = pytest.mark.slow

FAULT_OK = "DHASH_FAULT_ALLOW_PRODUCTION=true"  # the site's environment is called production


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site.create(tmp_path_factory.mktemp("canary-site"), shutdown_grace_seconds=3)
    # the gates the post-deploy monitor reads after a promotion
    (s.base / "quality-gates-config.json").symlink_to(CHECKOUT / "quality-gates-config.json")
    try:
        # installing is inert (no lock, its own release directory), so it runs beside the first
        # deploy; the canaries below run this installed release, which adds a nullable column
        # (an expand-only migration: the first canary backs up and runs it)
        candidate = str(wheel_for("2.0.0", migration="reversible"))
        installing = subprocess.Popen(
            [dhash_bin(), "release", "install", "--env", "production", "--source", candidate],
            cwd=s.base, env=dhash_env(s.base), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        done = s.deploy(wheel_for("1.0.0"), "--no-monitor")
        _out, err = installing.communicate(timeout=240)
        assert done.returncode == 0, done.stderr[-2000:]
        assert installing.returncode == 0, err[-2000:]
        yield s
    finally:
        s.shutdown()


def _load(site: Site, seed: int, threads: int = 2, ingest_every: int = 2) -> LoadGenerator:
    return LoadGenerator(
        site.env.port,
        TOKEN,
        threads=threads,
        max_seconds=60,
        ingest_every=ingest_every,
        seed_base=seed,
    )


def _start(site: Site, version: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [dhash_bin(), "canary", "start", "--env", "production",
         "--version", version, "--interval", "0.5", *args],
        cwd=site.base, env={**dhash_env(site.base), "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.matrix(keep=2, group="heavy")  # make test: two of the five heavy scenarios a run
def test_a_really_slower_canary_is_aborted_by_the_judge_after_its_expand_migration(
    site: Site,
) -> None:
    before = database_revision(site.env.database_url)
    logs = {slot: _log_lines(site, slot) for slot in SLOTS}
    slow = "DHASH_FAULT_HASH_LATENCY_SECONDS=0.3"  # every hash of the candidate, really slept
    with _load(site, 700_000) as starting:
        proc = _start(site, "2.0.0", "--steps", "50", "--step-minutes", "10",
                      "--release-setting", slow, "--release-setting", FAULT_OK)  # fmt: skip
        _wait_running(site, proc, "2.0.0")
    # every request an upload: the judge's samples twice as fast (two clients: no more at once
    # than a release's two extraction slots)
    with _load(site, 800_000, ingest_every=1) as load:
        try:
            _out, err = proc.communicate(timeout=58)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _out, err = proc.communicate(timeout=30)
            pytest.fail(f"the judge did not abort the slow canary: {err[-3000:]}")
    assert proc.returncode == 1, err[-3000:]  # aborted by the judgement
    state = read_state(site.env)
    assert state is not None and state.status == "aborted", state
    assert "hash time vs stable" in state.reason, state.reason
    assert site.target.current().version == "1.0.0"  # type: ignore[union-attr]
    running = [s for s in site.target.supervisor.slots() if s.state == "RUNNING"]
    assert [s.release for s in running] == ["1.0.0"]
    # 1.0.0 served every request on the schema 2.0.0's expand-only migration left; a failed
    # request is one the bad canary answered itself (its own request log says so: e.g. a slow
    # hash still in flight when its drain ended is answered 503 "retry on another").
    failed = starting.result.failures + load.result.failures
    answered = {slot: _log_lines(site, slot)[len(logs[slot]) :] for slot in SLOTS}
    stable_slot = next(slot for slot in SLOTS if slot != state.slot)
    assert [line for line in answered[stable_slot] if '"status": 5' in line] == []
    by_canary = [line for line in answered[state.slot] if '"status": 503' in line]
    assert all(f.endswith("HTTP 503") for f in failed), failed
    assert len(failed) <= len(by_canary), (failed, by_canary)
    run = site.journal.run(state.run_id)
    assert run is not None and run.status_of("backup") == "done"  # before the migration
    assert Path(run.detail_of("backup")["path"]).is_file()
    assert run.detail_of("backup")["schema"] == before
    assert run.detail_of("migrate")["to_revision"] == database_revision(site.env.database_url)
    assert database_revision(site.env.database_url) != before
    report = (site.env.root / "canary" / "report.html").read_text(encoding="utf-8")
    assert "ABORTED" in report and 'data-series="canary"' in report


@pytest.mark.matrix(keep=2, group="heavy")  # make test: two of the five heavy scenarios a run
def test_a_killed_canary_is_resumed_then_aborted_by_an_operator_and_stable_is_untouched(
    site: Site,
) -> None:
    stable = site.target.current().version  # type: ignore[union-attr]
    started = _notices(site).count("canary 2.0.0 started")
    with _load(site, 0) as starting:
        proc = _start(site, "2.0.0", "--steps", "10", "--step-minutes", "10",
                      "--release-setting", "DHASH_FAULT_HASH_LATENCY_SECONDS=0")  # fmt: skip
        _wait_running(site, proc, "2.0.0")
        _wait_until(lambda: _notices(site).count("canary 2.0.0 started") > started)  # last act
        proc.kill()  # the controller dies; the candidate and the weighted program stay
        proc.communicate(timeout=30)  # (and its pipes closed)
        # one after the other (status only looks at the lock now: tests/unit/test_locking.py
        # shows a run started during a look is not refused)
        shown = site.run("release", "status", "--env", "production")
        refused = site.run("rollback", "--env", "production", "--reason", "test")
        assert "canary: 2.0.0 beside 1.0.0: interrupted at 10%" in shown.stdout, shown.stdout
        assert refused.returncode == 1 and "canary abort" in refused.stderr, refused.stderr
        run_id = read_state(site.env).run_id  # type: ignore[union-attr]
        assert not site.journal.run(run_id).finished  # type: ignore[union-attr]
        again = _start(site, "2.0.0")  # its own steps and evidence, from the state and ledger
        resumed = _wait_for_record(
            site, lambda r: r.deploy_id == run_id and bool(r.detail.get("resumed")), again
        )
        assert resumed, again.communicate()[1][-3000:]
        polled = len(read_ledger(site.env))
    with _load(site, 100_000) as load:
        _wait_until(lambda: len(read_ledger(site.env)) > polled)  # the resumed run polls
        shown = site.run("canary", "status", "--env", "production")
        assert "canary 2.0.0" in shown.stdout and "10% of new connections" in shown.stdout
        assert "failures vs stable" in shown.stdout
        aborted = site.run("canary", "abort", "--env", "production", timeout=120)
        assert aborted.returncode == 0, aborted.stderr
        _out, err = again.communicate(timeout=60)
    assert starting.result.failed == 0, starting.result.failures[:5]
    assert again.returncode == 1, err[-3000:]  # the run ended aborted
    assert read_state(site.env).status == "aborted"  # type: ignore[union-attr]
    assert site.target.current().version == stable  # type: ignore[union-attr]
    running = [s for s in site.target.supervisor.slots() if s.state == "RUNNING"]
    assert [s.release for s in running] == [stable]
    assert load.result.failed == 0, load.result.failures[:5]
    run = site.journal.run(run_id)
    assert run is not None and run.kind == "canary" and run.outcome == "failed"
    assert run.detail_of("canary")["outcome"] == "aborted"
    assert "canary 2.0.0 aborted" in _notices(site)
    # The weighted program is gone with the canary: a process joining the port now gets new
    # connections from the kernel's own spreading (the next deploy's readiness needs that).
    assert _joiner_reached(site.env.port)


def test_a_canary_whose_candidate_stopped_meanwhile_is_aborted_to_stable_by_the_next_start(
    site: Site,
) -> None:
    proc = _start(site, "2.0.0", "--steps", "10", "--step-minutes", "10")
    _wait_running(site, proc, "2.0.0")
    proc.kill()
    proc.communicate(timeout=30)
    state = read_state(site.env)
    assert state is not None
    site.target.retire_slot(state.slot)  # the candidate stops while no controller watches it
    again = site.run("canary", "start", "--env", "production", "--version", "2.0.0")
    assert again.returncode == 1, again.stderr[-3000:]  # aborted, nothing resumed
    ended = read_state(site.env)
    assert ended is not None and ended.status == "aborted"
    assert "the candidate was no longer running" in ended.reason, ended.reason
    run = site.journal.run(state.run_id)
    assert run is not None and run.outcome == "failed"
    running = [s for s in site.target.supervisor.slots() if s.state == "RUNNING"]
    assert [s.release for s in running] == ["1.0.0"]
    assert site.health()["version"] == "1.0.0"
    assert _joiner_reached(site.env.port)  # the weighted program went with it


# make test runs one of the next two per run (the group's other one is in make test-full): each
# starts from 1.0.0 serving alone and ends there.
@pytest.mark.matrix(keep=2, group="heavy")  # make test: two of the five heavy scenarios a run
def test_a_start_killed_before_its_candidate_serves_is_cleaned_up_then_low_traffic_holds(
    site: Site,
) -> None:
    """The next start stops the half-started candidate and closes that run, then starts its
    own; with no traffic its step never sees the samples it needs: inconclusive (exit 5), held
    for an operator, whose `canary abort` (no controller running) ends it."""
    proc = _start(site, "2.0.0", "--steps", "10", "--step-minutes", "10")
    killed = _wait_booting(site, proc, "2.0.0")  # the candidate's process is up, not serving
    proc.kill()
    proc.communicate(timeout=30)
    run = site.journal.run(killed)
    assert run is not None and not run.finished and run.status_of("canary") == "started"
    earlier = read_state(site.env)
    assert earlier is None or earlier.run_id != killed  # no state names it: it never served
    # 10 % for 0.3 s, then up to 3 s for 10 extractions a release that no client sends
    again = site.run("canary", "start", "--env", "production", "--version", "2.0.0",
                     "--steps", "10", "--step-minutes", "1", "--interval", "100",
                     "--time-scale", "200")  # fmt: skip
    assert again.returncode == 5, again.stderr[-3000:]  # inconclusive
    assert "left by an interrupted start" in again.stderr, again.stderr[-3000:]
    said = "canary 2.0.0 inconclusive, holding at 10% beside 1.0.0 for an operator"
    assert said in again.stderr and "`dhash canary abort --env production`" in again.stderr
    closed = site.journal.run(killed)
    assert closed is not None and closed.outcome == "failed"
    held = read_state(site.env)
    assert held is not None and held.status == "inconclusive" and held.run_id != killed
    assert "canary / 0 stable extractions" in held.reason, held.reason
    running = sorted(s.release for s in site.target.supervisor.slots() if s.state == "RUNNING")
    assert running == ["1.0.0", "2.0.0"]  # held beside stable, at its weight
    shown = site.run("release", "status", "--env", "production")
    assert "canary: 2.0.0 beside 1.0.0: held inconclusive at 10%" in shown.stdout, shown.stdout
    aborted = site.run("canary", "abort", "--env", "production", timeout=120)
    assert aborted.returncode == 0, aborted.stderr[-3000:]
    ended = read_state(site.env)
    assert ended is not None and ended.status == "aborted"
    assert ended.reason == "aborted by an operator"
    run = site.journal.run(ended.run_id)
    assert run is not None and run.outcome == "failed"
    running = [s.release for s in site.target.supervisor.slots() if s.state == "RUNNING"]
    assert running == ["1.0.0"]
    assert site.health()["version"] == "1.0.0"
    assert _joiner_reached(site.env.port)


@pytest.mark.matrix(keep=2, group="heavy")  # make test: two of the five heavy scenarios a run
def test_a_canary_promoted_from_another_terminal_then_failed_by_the_monitor_is_rolled_back(
    site: Site,
) -> None:
    """`dhash canary promote` beside a running `canary start` (which holds the lock: it acts on
    the request at its next poll); the new stable really is slower (its hash time, on the real
    code path), the post-deploy monitor fails it on p95HashTime over real traffic, and the
    deploy's automatic rollback puts 1.0.0 back, journaled inside the canary's run."""
    gates = gates_file(site.base)  # p95HashTime fails above 250 ms, after 10 samples
    slow = "DHASH_FAULT_HASH_LATENCY_SECONDS=0.4"
    # No traffic before the promotion: the judge, which sees the slower hashes in a few samples,
    # has nothing to act on first. The load starts as the switch is done (the promote command
    # returns then), before the monitor's first samples, and runs through the rollback.
    proc = _start(site, "2.0.0", "--steps", "5", "--step-minutes", "10",
                  "--release-setting", slow, "--release-setting", FAULT_OK,
                  "--gates-config", str(gates), "--monitor-time-scale", "90")  # fmt: skip
    _wait_running(site, proc, "2.0.0")
    promoted = site.run("canary", "promote", "--env", "production", timeout=120)
    # Two clients, every request an upload: no more at once than the release's two extraction
    # slots (a third would queue behind the slower hashes and be shed with a 503 by admission
    # control, as designed: seen at load 10).
    with _load(site, 900_000, ingest_every=1) as load:
        try:
            _out, err = proc.communicate(timeout=55)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            _out, err = proc.communicate(timeout=30)
            pytest.fail(f"the promoted canary was not rolled back: {err[-3000:]}")
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    assert "asked the running canary to promote" in promoted.stderr
    assert "canary 2.0.0: promoted" in promoted.stderr
    assert proc.returncode == 1, err[-3000:]  # promoted, then rolled back
    assert "promoted, then the monitor failed it" in err, err[-3000:]
    state = read_state(site.env)
    assert state is not None and state.status == "rolled_back", state
    assert "p95HashTime" in state.reason, state.reason
    run = site.journal.run(state.run_id)
    assert run is not None and run.kind == "canary" and run.outcome == "failed"
    assert run.detail_of("canary")["reason"] == "promoted by an operator"
    assert run.status_of("activate") == "done" and run.status_of("monitor") == "failed"
    assert run.status_of("auto_rollback") == "done", run.detail_of("auto_rollback")
    assert run.detail_of("auto_rollback")["ok"] is True
    evidence = {e["gate"]: e for e in run.detail_of("monitor")["evidence"]}
    assert evidence["p95HashTime"]["value"] > 250, evidence
    assert site.target.current().version == "1.0.0"  # type: ignore[union-attr]
    assert site.health()["version"] == "1.0.0"
    running = [s.release for s in site.target.supervisor.slots() if s.state == "RUNNING"]
    assert running == ["1.0.0"]
    assert load.result.failed == 0, load.result.failures[:5]
    assert "canary 2.0.0 promoted, then failed by the monitor" in _notices(site)
    shown = site.run("release", "status", "--env", "production")
    line = f"last deploy: canary of 2.0.0, promoted ({state.run_id}): quality gates failed"
    assert line in shown.stdout, shown.stdout


@pytest.mark.matrix(keep=2, group="heavy")  # make test: two of the five heavy scenarios a run
def test_a_good_canary_steps_is_promoted_and_then_watched_by_the_monitor(site: Site) -> None:
    # Two load runs back to back (the generator runs at most 60 s): the candidate's start,
    # then its steps, the promotion and the monitor's window (60 minutes / 1440 = 2.5 s).
    with _load(site, 500_000) as starting:
        proc = _start(site, "2.0.0", "--steps", "25,50", "--step-minutes", "0.02",
                      "--monitor-time-scale", "1440",
                      # a release keeps its settings: the sampled promote test may have left
                      # 2.0.0 slowed (0.4 s per hash), which the judge rightly aborted
                      "--release-setting", "DHASH_FAULT_HASH_LATENCY_SECONDS=0")  # fmt: skip
        _wait_running(site, proc, "2.0.0")
    with _load(site, 600_000) as load:
        try:
            _out, err = proc.communicate(timeout=58)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack to stderr
            _out, err = proc.communicate(timeout=30)
            pytest.fail(f"dhash canary start did not end: {err[-3000:]}")
    assert starting.result.failed == 0, starting.result.failures[:5]
    assert proc.returncode == 0, err[-3000:]
    assert "now takes 50% of new connections" in err
    assert site.target.current().version == "2.0.0"  # type: ignore[union-attr]
    assert site.health()["version"] == "2.0.0"
    assert load.result.failed == 0, load.result.failures[:5]
    state = read_state(site.env)
    assert state is not None and state.status == "promoted"
    run = site.journal.run(state.run_id)
    assert run is not None and run.kind == "canary" and run.outcome == "done"
    assert run.status_of("activate") == "done" and run.status_of("monitor") == "done"
    verdict = run.detail_of("monitor")["verdict"]
    assert verdict in ("passed", "inconclusive"), run.detail_of("monitor")
    shown, status = _at_once(
        site, ("release", "status", "--env", "production"),
        ("canary", "status", "--env", "production", "--json"),
    )  # fmt: skip
    assert f"canary: 2.0.0 beside 1.0.0: promoted, monitor {verdict}" in shown.stdout
    # the promotion is the last release change, watched like a deploy's
    assert f"last deploy: canary of 2.0.0, promoted ({state.run_id}): " in shown.stdout, shown
    body = json.loads(status.stdout)
    assert body["canary"]["status"] == "promoted" and body["polls"] >= 2


def _log_lines(site: Site, slot: str) -> list[str]:
    """The slot's service log (its request lines: method, route, status, duration)."""
    try:
        text = (site.env.root / "shared" / "logs" / f"{slot}.log").read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if '"event": "request"' in line]


def _at_once(site: Site, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Independent read-only ``dhash`` commands run side by side (each is mostly its start)."""
    procs = [
        subprocess.Popen(
            [dhash_bin(), *args],
            cwd=site.base,
            env=dhash_env(site.base),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in commands
    ]
    done = []
    for proc, args in zip(procs, commands, strict=True):
        out, err = proc.communicate(timeout=240)
        done.append(subprocess.CompletedProcess(list(args), proc.returncode, out, err))
    return done


def _wait_for_record(
    site: Site, match: Callable[[JournalRecord], bool], proc: subprocess.Popen[str]
) -> bool:
    """Until the journal has a record that ``match``es (every 0.1 s: the journal is read
    whole each time) or ``proc`` ends."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(match(r) for r in site.journal.records()):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.1)
    raise AssertionError("timed out waiting for a journal record")


def _notices(site: Site) -> str:
    return "\n".join(p.read_text() for p in (site.base / "logs").glob("notifications_*.log"))


def _wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def _wait_running(
    site: Site, proc: subprocess.Popen[str], version: str, timeout: float = 150
) -> None:
    """Until the canary runs (the start installs nothing here, but boots a release under this
    machine's load); the controller's stacks and output if it does not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(site.env)
        if state and state.status == "running" and state.version == version:
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGABRT)
    raise AssertionError(f"the canary did not start: {proc.communicate(timeout=30)[1][-3000:]}")


def _wait_booting(
    site: Site, proc: subprocess.Popen[str], version: str, timeout: float = 150
) -> str:
    """Until the start's candidate process is up under supervisord but the canary is not yet
    running (its candidate does not serve yet); the start's run id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        booting = [s for s in site.target.supervisor.slots()
                   if s.release == version and s.state in ACTIVE_STATES]  # fmt: skip
        last = site.journal.last_run()
        if booting and last is not None and last.kind == "canary" and not last.finished:
            state = read_state(site.env)
            assert state is None or state.run_id != last.deploy_id, "it served already"
            return last.deploy_id
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    proc.send_signal(signal.SIGABRT)
    raise AssertionError(f"no candidate booted: {proc.communicate(timeout=30)[1][-3000:]}")


def _joiner_reached(port: int, tries: int = 60) -> bool:
    with socket.socket() as joiner:
        joiner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        joiner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        joiner.bind(("127.0.0.1", port))
        joiner.listen(64)
        joiner.setblocking(False)
        for _ in range(tries):
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            try:
                joiner.accept()[0].close()
                return True
            except BlockingIOError:
                continue
    return False
