"""The guarded deploy through ``dhash deploy``: one at a time, killed anywhere, run again."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest

from dhash_rollout.runs.journal import RUN_PHASE
from tests.support.matrix_sampling import subset
from tests.support.release_builds import PROBE_COLUMN, wheel_for
from tests.support.rollout_site import Site, assert_fully_on

pytestmark = pytest.mark.slow

# Every phase that acts, in pipeline order (lock is held before the journal is written).
KILL_AT = (
    "preflight",
    "notify_start",
    "backup",
    "install",
    "migrate",
    "activate",
    "health",
    "smoke",
    "notify_result",
)
STATE_CHANGING = ("backup", "install", "migrate", "activate")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site.create(
        tmp_path_factory.mktemp("deploy-site"), ready_timeout_seconds=60, backup_max_age_seconds=1
    )
    try:
        first = site.deploy(wheel_for("1.0.0"))
        assert first.returncode == 0, first.stdout + first.stderr
        yield site
    finally:
        site.shutdown()


def test_the_first_deploy_journals_every_phase_and_serves(site: Site) -> None:
    assert_fully_on(site, "1.0.0")
    run = site.journal.last_run("deploy")
    assert run is not None and run.outcome == "done"
    assert run.status_of("backup") == "skipped"  # no database before the first deploy
    assert run.detail_of("monitor")["reason"] == "--no-monitor"
    assert all(run.status_of(p) in ("done", "skipped") for p in KILL_AT)
    logs = sorted((site.base / "logs").glob("deploy_production_*.log"))
    events = [json.loads(line) for line in logs[-1].read_text().splitlines()]
    assert {"timestamp", "level", "event"} <= set(events[0])
    assert any(e.get("event") == "deploy_done" for e in events)


def test_a_second_deploy_at_the_same_time_is_refused_with_exit_3(site: Site) -> None:
    lines = len(list(site.journal.records()))
    holder = site.popen(
        "deploy", "--env", "production", "--no-monitor", "--source", str(wheel_for("1.0.0"))
    )
    try:
        started = site.wait_for_record(
            lambda r: r.phase == "preflight" and r.status == "started", holder, after=lines
        )
        assert started is not None
        # Frozen while it holds the lock: a deploy of the installed release finishes in less
        # time than the second command takes to start, which made this test a race.
        os.kill(holder.pid, signal.SIGSTOP)
        second = site.run(
            "deploy", "--env", "production", "--no-monitor", "--source", str(wheel_for("1.0.0"))
        )
        assert second.returncode == 3, second.stderr
        assert f"pid {holder.pid}" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        os.kill(holder.pid, signal.SIGCONT)
        assert holder.wait(240) == 0
    assert_fully_on(site, "1.0.0")


def test_a_release_that_cannot_serve_leaves_the_old_release_and_schema(site: Site) -> None:
    assert_fully_on(site, "1.0.0")
    before = site.image_ids()
    done = site.deploy(wheel_for("1.5.0", migration="reversible", broken=True))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED: production 1.5.0" in done.stdout
    run = site.journal.last_run("deploy")
    assert run is not None and run.outcome == "failed"
    assert run.status_of("migrate") == "done"  # the schema had moved ...
    assert run.status_of("activate") == "failed"
    assert run.status_of("undo") == "done"  # ... and was put back
    assert_fully_on(site, "1.0.0")
    assert site.image_ids() == before
    # Issue 12 item 7: the release's own exception, on the console and in the notice (not
    # "see the log lines above").
    why = "RuntimeError: this build cannot serve (rollout test)"
    assert why in done.stdout + done.stderr, done.stdout + done.stderr
    notices = "\n".join(p.read_text() for p in (site.base / "logs").glob("notifications_*.log"))
    assert any(why in line for line in notices.splitlines() if run.deploy_id in line)


def test_a_deploy_killed_at_every_phase_converges_when_run_again(site: Site) -> None:
    wheel = wheel_for("2.0.0", migration="reversible")
    args = ("deploy", "--env", "production", "--no-monitor", "--source", str(wheel))
    interrupted: list[str | None] = []
    run_id = None
    # make test kills in the phases that change state and two of the others (a new pair each
    # run); make test-full kills in every phase.
    phases = subset("deploy-kill-phases", KILL_AT, keep=2, always=STATE_CHANGING)
    for phase in phases:
        lines = len(list(site.journal.records()))
        proc = site.popen(*args)
        hit = site.wait_for_record(
            lambda r, p=phase: r.phase == p and r.status == "started", proc, after=lines
        )
        assert hit is not None, f"the deploy ended before reaching {phase}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        state = site.journal.last_run("deploy")
        assert state is not None and not state.finished
        run_id = run_id or state.deploy_id
        assert state.deploy_id == run_id  # every re-run resumed the same deploy
        interrupted.append(state.interrupted_phase)
    # The kills landed inside the phases that change state.
    assert set(STATE_CHANGING) <= set(interrupted), interrupted
    final = site.run(*args)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "resuming the interrupted run" in final.stdout
    assert_fully_on(site, "2.0.0")
    headers = [
        r for r in site.journal.records()
        if r.deploy_id == run_id and r.phase == RUN_PHASE and r.status == "started"
    ]  # fmt: skip
    assert len(headers) == 1
    done = site.journal.run(run_id)
    assert done is not None and done.outcome == "done"
    # The start notice went out once, however many times the deploy ran.
    notices = sorted((site.base / "logs").glob("notifications_*.log"))
    sent = "\n".join(p.read_text() for p in notices)
    assert sum(f'"key":"{run_id}:start"' in line for line in sent.splitlines()) == 1
    listed = json.loads(site.run("release", "list", "--env", "production", "--json").stdout)
    assert [(r["version"], r["current"]) for r in listed][-1] == ("2.0.0", True)
    # The new column exists: the schema is the new release's.
    from sqlalchemy import create_engine, inspect

    engine = create_engine(site.env.database_url)
    try:
        assert PROBE_COLUMN in {c["name"] for c in inspect(engine).get_columns("contents")}
    finally:
        engine.dispose()
