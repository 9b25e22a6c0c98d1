"""The guarded deploy end to end: ``dhash deploy`` watches the new release and acts on it.

Real releases (wheels of this checkout), a real supervisord, the service on loopback under the
load generator, and releases that are really bad: a fault-injection setting carried by the
release alone (``--release-setting``, its ``settings.json``). The 60-minute window runs
``TIME_SCALE`` times faster (intervals and gate windows alike). One site and its first release
are shared by the module; the tests run in order (each starts from the release the last left).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from dhash_rollout.monitor.ledger import read_rows
from dhash_rollout.runs.journal import RunState
from tests.integration.monitor_support import gates_file
from tests.support.load import LoadGenerator
from tests.support.release_builds import dhash_bin, dhash_env, wheel_for
from tests.support.rollout_site import TOKEN, Site, assert_fully_on

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]  # a busy 2-core machine

TIME_SCALE = "720"  # the 60-minute window in 5 s; polls every 42 ms, then every 0.17 s
KILLED_SCALE = "180"  # 20 s: the kill, `release status` and `dhash monitor` fit inside it
FAULT_OK = "DHASH_FAULT_ALLOW_PRODUCTION=true"  # the site's environment is called production


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site.create(tmp_path_factory.mktemp("guarded"))
    # site.base / "gates.json": levels loopback traffic on a busy 2-core machine can reach
    gates_file(site.base, p95HashTime={"minSamples": 5}, extractionFailureRate={"minSamples": 5})
    try:
        first = site.deploy(wheel_for("1.0.0"))
        assert first.returncode == 0, first.stdout + first.stderr
        yield site
    finally:
        site.shutdown()


def _guarded(
    site: Site, version: str, *settings: str, seed: int, scale: str = TIME_SCALE
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``dhash deploy`` of ``version`` with its monitor on, the load generator running while it
    watches (its window); the result and the seconds from the window's start to the end."""
    flags = [f"--release-setting={s}" for s in settings]
    args = ["--time-scale", scale, "--gates-config", "gates.json", *flags]
    proc = _start_deploy(site, version, *args)
    lines = len(list(site.journal.records()))
    watching = site.wait_for_record(
        lambda r: r.phase == "monitor" or r.status == "failed", proc.proc, after=lines
    )
    began = time.monotonic()
    if watching is not None and watching.phase == "monitor":
        with LoadGenerator(
            site.env.port, TOKEN, threads=3, max_seconds=40, ingest_every=1, seed_base=seed
        ):
            proc.proc.wait(timeout=120)
    return proc.finish(), time.monotonic() - began


class _Deploy:
    """A ``dhash deploy`` child whose output is kept (in files: no pipe to fill up)."""

    def __init__(self, site: Site, out: Path, args: list[str]) -> None:
        self.out, self.err = out.with_suffix(".out"), out.with_suffix(".err")
        self.args = args
        with self.out.open("w") as stdout, self.err.open("w") as stderr:
            self.proc = subprocess.Popen(
                [dhash_bin(), *args], cwd=site.base, env=dhash_env(site.base),
                stdout=stdout, stderr=stderr, text=True,
            )  # fmt: skip

    def finish(self) -> subprocess.CompletedProcess[str]:
        code = self.proc.wait(timeout=180)
        return subprocess.CompletedProcess(
            self.args, code, self.out.read_text(), self.err.read_text()
        )


def _start_deploy(site: Site, version: str, *args: str) -> _Deploy:
    wheel = wheel_for(version)
    argv = ["deploy", "--env", site.env_name, "--source", str(wheel), *args]
    return _Deploy(site, site.base / f"deploy-{version}-{time.monotonic_ns()}", argv)


def _last_deploy(site: Site) -> RunState:
    run = site.journal.last_run("deploy")
    assert run is not None
    return run


def _rollbacks(site: Site) -> list[RunState]:
    return [r for r in site.journal.runs() if r.kind == "rollback"]


def _notices(site: Site) -> list[dict[str, object]]:
    found = []
    for path in sorted((site.base / "logs").glob("notifications_*.log")):
        found += [json.loads(x)["notification"] for x in path.read_text().splitlines() if x]
    return found


def _of_run(site: Site, run_id: str) -> list[dict[str, object]]:
    return [n for n in _notices(site) if n.get("run_id") == run_id]


def _assert_rolled_back_once_for(site: Site, gate: str, before: int, old: str) -> RunState:
    run = _last_deploy(site)
    assert run.outcome == "failed"
    monitor = run.detail_of("monitor")
    assert monitor["verdict"] == "failed" and monitor["failed_gate"] == gate
    evidence = {e["gate"]: e for e in monitor["evidence"]}
    assert evidence[gate]["status"] == "fail" and evidence[gate]["value"] is not None
    rolled = run.detail_of("auto_rollback")
    assert run.status_of("auto_rollback") == "done" and rolled["ok"] is True
    new = _rollbacks(site)[before:]
    assert [r.deploy_id for r in new] == [rolled["rollback_run"]]  # exactly one
    child = new[0]
    assert child.outcome == "done" and child.params["trigger"] == "automatic"
    assert child.params["parent"] == run.deploy_id and gate in child.params["reason"]
    assert child.status_of("smoke") == "done"  # the rollback's own smoke tests ran
    assert_fully_on(site, old)
    # The ledger holds the evidence, the report is written and named in the ERROR notice.
    ledger = Path(monitor["ledger"])
    rows = read_rows(ledger)
    verdict = [r for r in rows if r["kind"] == "verdict"][-1]
    assert verdict["failed_gate"] == gate
    polls = [r for r in rows if r["kind"] == "poll"]
    statuses = [e["status"] for p in polls for e in p["evaluations"] if e["gate"] == gate]
    first_bad = next(i for i, s in enumerate(statuses) if s in ("breach", "fail"))
    assert len(statuses) - 1 - first_bad <= 2, statuses  # fired within two polls of the breach
    report = Path(monitor["report"])
    page = report.read_text()
    assert gate in page and 'class="violation"' in page and 'class="rollback"' in page
    notices = _of_run(site, run.deploy_id)
    failure = [n for n in notices if n["kind"] == "failure"]
    assert [n["severity"] for n in failure] == ["ERROR"]
    assert str(report) in str(failure[0]["message"])
    resolved = [n for n in notices if n.get("resolves") == run.deploy_id]
    assert len(resolved) == 1 and old in str(resolved[0]["message"])
    return run


def test_a_healthy_release_passes_the_whole_window_with_no_rollback(site: Site) -> None:
    before = len(_rollbacks(site))
    # x360: the healthy window must have data to its end (minSamples in the last 2.5 s)
    done, _seconds = _guarded(site, "2.0.0", seed=10_000_000, scale="360")
    assert done.returncode == 0, done.stdout + done.stderr
    run = _last_deploy(site)
    assert run.outcome == "done"
    monitor = run.detail_of("monitor")
    assert monitor["verdict"] == "passed", monitor
    assert monitor["polls"] == 38  # the guide's schedule: 10 polls in 5 min, then 28
    assert len(_rollbacks(site)) == before
    assert_fully_on(site, "2.0.0")
    success = [n for n in _of_run(site, run.deploy_id) if n["kind"] == "success"]
    assert [n["severity"] for n in success] == ["INFO"]
    assert "p95HashTime ok" in str(success[0]["message"])
    assert monitor["report"] in str(success[0]["message"])


def test_a_release_with_slow_hashing_is_rolled_back_by_the_p95_gate(site: Site) -> None:
    before = len(_rollbacks(site))
    done, _seconds = _guarded(
        site, "3.0.0", "DHASH_FAULT_HASH_LATENCY_SECONDS=0.4", FAULT_OK, seed=20_000_000
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED: production 3.0.0" in done.stdout
    release = site.env.root / "releases" / "3.0.0"
    assert json.loads((release / "settings.json").read_text()) == {
        "DHASH_FAULT_ALLOW_PRODUCTION": "true",
        "DHASH_FAULT_HASH_LATENCY_SECONDS": "0.4",
    }
    assert not (site.env.root / "releases" / "2.0.0" / "settings.json").exists()
    _assert_rolled_back_once_for(site, "p95HashTime", before, "2.0.0")


def test_a_release_that_sends_everything_to_review_is_rolled_back_by_the_queue_gate(
    site: Site,
) -> None:
    before = len(_rollbacks(site))
    # The installed 3.0.0 again (no new build), now carrying another fault.
    done, _seconds = _guarded(
        site, "3.0.0", "DHASH_FAULT_LOW_CONFIDENCE=true", FAULT_OK, seed=30_000_000
    )
    assert done.returncode == 1, done.stdout + done.stderr
    _assert_rolled_back_once_for(site, "lowConfidenceQueue", before, "2.0.0")
    _clear_review_queue(site)


def _clear_review_queue(site: Site) -> None:
    """The queue lives in the database, across releases: reject what the bad release queued."""
    engine = create_engine(site.env.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE review_items SET status = 'rejected'"))
    finally:
        engine.dispose()


def test_a_bad_release_setting_is_refused_before_anything_changes(site: Site) -> None:
    """(Each refusal is a case of tests/unit/test_release_settings.py; here: through the CLI.)"""
    lines = len(list(site.journal.records()))
    done = site.deploy(
        wheel_for("1.0.0"), "--release-setting", "DHASH_FAULT_LOW_CONFIDENCE=true", monitor=True
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refused in production" in done.stderr and "Traceback" not in done.stderr
    assert len(list(site.journal.records())) == lines
    assert not (site.env.root / "releases" / "1.0.0" / "settings.json").exists()


def _wait_for_polls(site: Site, proc: subprocess.Popen[str], count: int, after: int) -> Path:
    """The ledger of the deploy's monitor (journal records past ``after``) once it holds
    ``count`` polls."""
    record = site.wait_for_record(
        lambda r: "monitor.started" in r.detail, proc, timeout=180, after=after
    )
    assert record is not None, "the deploy ended before its monitor started"
    ledger = Path(record.detail["monitor.started"]["ledger"])
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if sum(r["kind"] == "poll" for r in read_rows(ledger)) >= count:
            return ledger
        time.sleep(0.02)
    raise AssertionError("the monitor did not poll")


def test_a_controller_killed_while_monitoring_is_resumed_by_dhash_monitor(site: Site) -> None:
    lines = len(list(site.journal.records()))
    # The installed 3.0.0 again, configured healthy this time (its settings.json is replaced).
    deploy = _start_deploy(
        site, "3.0.0", "--time-scale", KILLED_SCALE, "--gates-config", "gates.json",
        "--release-setting", "DHASH_FAULT_HASH_LATENCY_SECONDS=0",
    )  # fmt: skip
    ledger = _wait_for_polls(site, deploy.proc, 4, lines)
    os.kill(deploy.proc.pid, signal.SIGKILL)  # the controller dies mid-window
    deploy.proc.wait()
    with LoadGenerator(site.env.port, TOKEN, threads=3, max_seconds=60, ingest_every=1,
                       seed_base=40_000_000):  # fmt: skip
        killed = _last_deploy(site)
        assert not killed.finished and killed.interrupted_phase == "monitor"
        status = site.run("release", "status", "--env", "production")
        assert "monitoring interrupted — not verified" in status.stdout, status.stdout
        before = [r["offset"] for r in read_rows(ledger) if r["kind"] == "poll"]
        resumed = site.run(
            "monitor", "--env", "production", "--config", "gates.json", "--time-scale", KILLED_SCALE
        )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"the deploy {killed.deploy_id} is inside its window" in resumed.stdout
    run = _last_deploy(site)
    assert run.deploy_id == killed.deploy_id and run.outcome == "done"
    assert run.detail_of("monitor")["verdict"] == "passed"
    rows = read_rows(ledger)
    offsets = [r["offset"] for r in rows if r["kind"] == "poll"]
    assert offsets[: len(before)] == before and offsets == sorted(set(offsets))  # one window
    assert [r["kind"] for r in rows].count("start") == 1
    assert_fully_on(site, "3.0.0")
    status = site.run("release", "status", "--env", "production")
    assert "verified, quality gates passed" in status.stdout, status.stdout


def test_a_rollback_that_fails_is_critical_and_never_retried(site: Site) -> None:
    # 3.0.0 can no longer start: the rollback to it will fail in its switch.
    broken = site.env.root / "releases" / "3.0.0" / "settings.json"
    broken.write_text(json.dumps({"DHASH_FAULT_HASH_LATENCY_SECONDS": "not a number"}))
    before = len(_rollbacks(site))
    # 3.0.0 serves; the installed 2.0.0 comes back with a fault, and its rollback goes to 3.0.0.
    done, _seconds = _guarded(
        site, "2.0.0", "DHASH_FAULT_HASH_LATENCY_SECONDS=0.4", FAULT_OK, seed=50_000_000
    )
    assert done.returncode == 1, done.stdout + done.stderr
    run = _last_deploy(site)
    assert run.outcome == "failed" and run.detail_of("monitor")["failed_gate"] == "p95HashTime"
    assert run.status_of("auto_rollback") == "failed"
    [child] = _rollbacks(site)[before:]  # one attempt
    assert child.outcome == "failed" and child.params["trigger"] == "automatic"
    notices = _notices(site)
    mine = [n for n in notices if n.get("run_id") in (run.deploy_id, child.deploy_id)]
    critical = [n for n in mine if n["severity"] == "CRITICAL"]
    assert {n["run_id"] for n in critical} == {run.deploy_id, child.deploy_id}
    assert not [n for n in mine if n.get("resolves")]  # nothing is resolved
    # No loop: the monitor started by hand afterwards observes (the deploy is over) and does
    # not roll back again.
    again = site.run(
        "monitor", "--env", "production", "--config", "gates.json", "--time-scale", TIME_SCALE,
        "--duration", "2", "--json",
    )  # fmt: skip
    assert json.loads(again.stdout)["guarding"] is False, again.stdout + again.stderr
    assert len(_rollbacks(site)) == before + 1
