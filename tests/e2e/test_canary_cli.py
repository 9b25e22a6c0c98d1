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
4. a canary of 2.0.0 stepped 25 -> 50 % and promoted by the judgement, then watched by the
   post-deploy monitor's window (time-scaled), journaled like a deploy.

Zero failed requests to the clients through the tests under load (1, 2, 4)."""

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
from dhash_rollout.runs.schema import database_revision
from dhash_rollout.targets.local.supervisor import SLOTS
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
        done = s.deploy(wheel_for("1.0.0"), "--no-monitor")
        assert done.returncode == 0, done.stderr[-2000:]
        # installing is inert; the canaries below run this installed release, which adds a
        # nullable column (an expand-only migration: the first canary backs up and runs it)
        done = s.run("release", "install", "--env", "production",
                     "--source", str(wheel_for("2.0.0", migration="reversible")))  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        yield s
    finally:
        s.shutdown()


def _load(site: Site, seed: int) -> LoadGenerator:
    return LoadGenerator(
        site.env.port, TOKEN, threads=2, max_seconds=60, ingest_every=2, seed_base=seed
    )


def _start(site: Site, version: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [dhash_bin(), "canary", "start", "--env", "production",
         "--version", version, "--interval", "0.5", *args],
        cwd=site.base, env={**dhash_env(site.base), "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


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
    with _load(site, 800_000) as load:
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
        shown = site.run("release", "status", "--env", "production")
        assert "canary: 2.0.0 beside 1.0.0: interrupted at 10%" in shown.stdout, shown.stdout
        refused = site.run("rollback", "--env", "production", "--reason", "test")
        assert refused.returncode == 1 and "canary abort" in refused.stderr, refused.stderr
        run_id = read_state(site.env).run_id  # type: ignore[union-attr]
        assert not site.journal.run(run_id).finished  # type: ignore[union-attr]
        again = _start(site, "2.0.0")  # its own steps and evidence, from the state and ledger
        resumed = site.wait_for_record(
            lambda r: r.deploy_id == run_id and bool(r.detail.get("resumed")), again, timeout=60
        )
        assert resumed is not None, again.communicate()[1][-3000:]
    with _load(site, 100_000) as load:
        _wait_until(lambda: len(read_ledger(site.env)) >= 2)  # the resumed run polls
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


def test_a_good_canary_steps_is_promoted_and_then_watched_by_the_monitor(site: Site) -> None:
    # Two load runs back to back (the generator runs at most 60 s): the candidate's start,
    # then its steps, the promotion and the monitor's window (60 minutes / 1440 = 2.5 s).
    with _load(site, 500_000) as starting:
        proc = _start(site, "2.0.0", "--steps", "25,50", "--step-minutes", "0.02",
                      "--monitor-time-scale", "1440")  # fmt: skip
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
    shown = site.run("release", "status", "--env", "production")
    assert f"canary: 2.0.0 beside 1.0.0: promoted, monitor {verdict}" in shown.stdout
    status = site.run("canary", "status", "--env", "production", "--json")
    body = json.loads(status.stdout)
    assert body["canary"]["status"] == "promoted" and body["polls"] >= 2


def _log_lines(site: Site, slot: str) -> list[str]:
    """The slot's service log (its request lines: method, route, status, duration)."""
    try:
        text = (site.env.root / "shared" / "logs" / f"{slot}.log").read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if '"event": "request"' in line]


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
