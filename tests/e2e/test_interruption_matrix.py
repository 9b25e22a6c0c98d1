"""The interruption matrix (issue 12): under a live load generator, the controller is killed
(SIGKILL) or stopped (SIGTERM) at a phase boundary of a deploy or of a rollback (an app and
schema rollback, or a data restore), or inside a guarded deploy's monitor window, or meets an
incident (a stray listener on the port, a rollback after a rollback, a restore that fails after
the swap); then the operator's next command runs. Every case checks: exactly one release
serves, ``release status`` tells the truth (no orphan, no foreign listener), every acknowledged
ingest and reviewer's decision (made after the setup's backup) is in the database, and no
request failed outside a documented outage: a data restore's (from the service's stop before
the export to the release serving again, read from the journal) or, beside a stray listener,
the stray's share until it is gone. The restore cases measure their outage and print it.

Each case is a fresh site (a first deploy, then the interrupted run), so ``make test`` samples
one case per run (``matrix(keep=1)``) and ``make test-full`` runs them all. Each case prints
one row of the matrix: ``case | outcome``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from dhash_rollout.monitor.ledger import read_rows
from dhash_rollout.runs.journal import RUN_PHASE, JournalRecord
from tests.integration.monitor_support import gates_file
from tests.support.load import LoadGenerator
from tests.support.release_builds import dhash_bin, dhash_env, wheel_for
from tests.support.review_seed import decide_reviews, review_states
from tests.support.rollout_site import TOKEN, Site

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # a case is two deploys and a rollback

OLD, NEW, NEWER = "1.0.0", "2.0.0", "3.0.0"
LOAD_SECONDS = 55.0
# The monitor cases' 60-minute window in 15 s: long enough for a re-run (a process start, seconds
# on a busy machine) to find it still open and continue it, short enough for the case's budget.
MONITOR_SCALE = "240"


@dataclass(frozen=True)
class Case:
    kind: str  # deploy | rollback | restore | twice | stray | restore-fails
    phase: str | None = None
    sig: signal.Signals = signal.SIGKILL

    @property
    def name(self) -> str:
        if self.kind == "stray":
            return "deploy-beside-a-stray-listener"
        if self.kind == "restore-fails":
            if self.phase == "after-swap":
                return "rollback-killed-after-the-swap-whose-resume-fails"
            return "rollback-whose-restore-fails-after-the-swap"
        if self.kind == "twice":
            return f"rollback-after-a-rollback-{self.phase}-{self.sig.name}"
        if self.kind == "restore":
            return f"rollback-restoring-{self.phase}-{self.sig.name}"
        return f"{self.kind}-{self.phase}-{self.sig.name}"

    @property
    def restores(self) -> bool:
        """The case's rollback restores data: the documented outage (docs/deploy.md)."""
        return self.kind in ("restore", "restore-fails")


BOTH = (signal.SIGKILL, signal.SIGTERM)
DEPLOY_PHASES = ("preflight", "notify_start", "backup", "install", "migrate", "activate")
DEPLOY_PHASES += ("health", "smoke")
CASES = [
    *(Case("deploy", phase, sig) for phase in DEPLOY_PHASES for sig in BOTH),
    # The last phase has no boundary after it (a SIGTERM there lets the deploy finish); the
    # monitor phase is the guarded deploy's (--no-monitor here: tests/integration/*guarded*).
    Case("deploy", "notify_result", signal.SIGKILL),
    # The post-deploy monitor's window of a guarded deploy (MONITOR_SCALE times faster), stopped
    # while it watches: SIGTERM ends the window INTERRUPTED and the re-run continues the same
    # run and window; after a SIGKILL the rollback undoes the deploy.
    *(Case("deploy", "monitor", sig) for sig in BOTH),
    # An app and schema rollback (no outage), stopped in each phase that runs (the last one,
    # notify_result, has no boundary after it: a SIGTERM there lets the rollback finish).
    *(
        Case("rollback", phase, sig)
        for phase in ("notify_start", "activate", "downgrade", "health", "smoke")
        for sig in BOTH
    ),
    # A data restore (across an irreversible migration), stopped in each of its own phases.
    *(
        Case("restore", phase, sig)
        for phase in ("export_writes", "restore", "reapply_writes")
        for sig in BOTH
    ),
    *(Case("twice", "activate", sig) for sig in BOTH),
    Case("stray"),
    Case("restore-fails", "reapply_writes"),
    Case("restore-fails", "after-swap"),
]


@dataclass(frozen=True)
class Played:
    """What a case's play ends with: the release that must serve, and the documented window
    (wall-clock start, end) outside which no request may fail (None: none may fail)."""

    expected: str
    window: tuple[float, float] | None = None
    why: str = ""


def _run(site: Site, *args: str) -> subprocess.CompletedProcess[str]:
    return site.run(*args, timeout=300)


def _interrupt(site: Site, args: tuple[str, ...], phase: str, sig: signal.Signals) -> str | None:
    """Start ``dhash <args>``, signal it when ``phase`` starts; the run it interrupted."""
    lines = len(list(site.journal.records()))
    proc = subprocess.Popen(
        [dhash_bin(), *args],
        cwd=site.base,
        env=dhash_env(site.base),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        hit = site.wait_for_record(
            lambda r: r.phase == phase and r.status == "started", proc, after=lines
        )
        assert hit is not None, f"the run ended before {phase}"
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if sig is signal.SIGTERM:
        assert code == 130, f"SIGTERM at {phase}: exit {code}"
    return hit.deploy_id


def _one_release_serves(site: Site, version: str) -> None:
    status = json.loads(_run(site, "release", "status", "--env", "production", "--json").stdout)
    running = [p for p in status["processes"] if p["state"] == "RUNNING"]
    strays = [p for p in status["processes"] if p["state"] in ("ORPHAN", "FOREIGN")]
    assert [p["release"] for p in running] == [version], status
    assert strays == [], status
    assert status["current"] == version
    assert site.health()["version"] == version


def _setup(site: Site, case: Case) -> None:
    """What a case needs before the load starts: a second release serving for the rollback
    cases (with an irreversible migration where the rollback must restore), a third for the
    rollback after a rollback."""
    if case.kind in ("rollback", "restore", "twice", "restore-fails"):
        kind = "irreversible" if case.restores else "reversible"
        done = site.deploy(wheel_for(NEW, kind), "--no-monitor")
        assert done.returncode == 0, done.stdout + done.stderr
    if case.phase == "monitor":
        # The gates at levels a loaded 2-core machine's loopback traffic stays inside (the case
        # is about the interruption, not the gates: each fires on its fault in the monitor tests).
        gates_file(
            site.base,
            p95HashTime={"threshold": 5000, "warn": 4000, "minSamples": 5},
            extractionFailureRate={"minSamples": 5},
        )
    if case.kind == "twice":  # the same migration as 2.0.0: 3.0.0 -> 2.0.0 is an app switch
        done = site.deploy(wheel_for(NEWER, "reversible"), "--no-monitor")
        assert done.returncode == 0, done.stdout + done.stderr


def _stamp(record: JournalRecord) -> float:
    return datetime.fromisoformat(record.ts).timestamp()


def _restore_window(site: Site, run_id: str) -> tuple[float, float]:
    """The documented outage of the data-restore rollback ``run_id`` (resumed runs included),
    from its journal: from the start of its export (the service is stopped first) to the end of
    its activate (the target release serves) or, failing that, of the run (a put-back serves
    the release that served again before the run's last record)."""
    records = [r for r in site.journal.records() if r.deploy_id == run_id]
    start = next(r for r in records if r.phase == "export_writes" and r.status == "started")
    after = records[records.index(start) :]
    end = next(
        r
        for r in after
        if (r.phase == "activate" and r.status == "done")
        or (r.phase == RUN_PHASE and r.status in ("done", "failed"))
    )
    return _stamp(start), _stamp(end)


def _rollback_run(site: Site, after: int) -> str:
    """The rollback run started past journal line ``after``."""
    for record in list(site.journal.records())[after:]:
        header = record.phase == RUN_PHASE and record.status == "started"
        if header and record.detail.get("kind") == "rollback":
            return record.deploy_id
    raise AssertionError("no rollback run started")


def _play(site: Site, case: Case) -> Played:
    """Interrupt as the case says, run the operator's next command; what must hold after."""
    source = ("--source", str(wheel_for(NEW, "reversible")))
    deploy: tuple[str, ...] = ("deploy", "--env", "production", "--no-monitor", *source)
    rollback = ("rollback", "--env", "production", "--reason", f"matrix {case.name}")
    if case.kind == "deploy":
        assert case.phase is not None
        if case.phase == "monitor":  # guarded: the same deploy with its monitor on
            deploy = ("deploy", "--env", "production", *source, "--time-scale", MONITOR_SCALE,
                      "--gates-config", "gates.json")  # fmt: skip
        run_id = _interrupt(site, deploy, case.phase, case.sig)
        if case.sig is signal.SIGTERM:  # the printed next command: re-run resumes it
            done = _run(site, *deploy)
            assert done.returncode == 0, done.stdout + done.stderr
            if case.phase == "monitor":
                _continued_its_window(site, run_id, done.stdout)
            return Played(NEW)
        done = _run(site, *rollback)  # after a kill: roll back (it undoes the deploy)
        assert done.returncode in (0, 1), done.stdout + done.stderr
        if done.returncode == 1:  # killed before anything changed: nothing to roll back
            assert "nothing to roll back to" in done.stderr, done.stderr
        return Played(OLD)
    if case.kind in ("rollback", "restore"):
        assert case.phase is not None
        run_id = _interrupt(site, rollback, case.phase, case.sig)
        done = _run(site, *rollback)  # run again: it resumes
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"[{run_id}]" in done.stdout, done.stdout  # the same run, resumed
        if case.kind == "restore":
            assert run_id is not None
            return Played(OLD, _restore_window(site, run_id), "the restore's outage")
        return Played(OLD)
    if case.kind == "twice":
        return _rollback_twice(site, rollback, case)
    if case.kind == "restore-fails":
        return _restore_fails(site, rollback, after_swap=case.phase == "after-swap")
    return _stray(site, deploy)


def _continued_its_window(site: Site, run_id: str | None, out: str) -> None:
    """The re-run of a deploy stopped in its monitor phase resumed that run and watched the
    rest of the same window (one start row in its ledger) to a verdict that let it finish."""
    assert run_id is not None and f"[{run_id}]" in out and "resuming the interrupted run" in out
    run = site.journal.run(run_id)
    assert run is not None and run.outcome == "done", run
    monitor = run.detail_of("monitor")
    assert monitor["verdict"] in ("passed", "inconclusive"), monitor
    rows = read_rows(Path(monitor["ledger"]))
    assert len([r for r in rows if r["kind"] == "start"]) == 1, rows[:3]
    polls = [float(r["offset"]) for r in rows if r["kind"] == "poll"]
    assert polls == sorted(set(polls)) and polls, polls  # one schedule, never started again


def _rollback_twice(site: Site, rollback: tuple[str, ...], case: Case) -> Played:
    """A rollback after a rollback (docs/deploy.md): the second goes to the release before the
    one the first went back to, never bouncing to the newer one; once no release is left
    before, a third is refused and changes nothing."""
    assert case.phase is not None
    first = _run(site, *rollback)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"-> {NEW}" in first.stdout, first.stdout
    _interrupt(site, rollback, case.phase, case.sig)  # the second one, stopped
    second = _run(site, *rollback)  # resumed to its end
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"-> {OLD}" in second.stdout, second.stdout
    lines = len(list(site.journal.records()))
    third = _run(site, *rollback)
    assert third.returncode == 1, third.stdout + third.stderr
    assert f"nothing to roll back to: no release was deployed to production before {OLD}" in (
        third.stderr
    ), third.stderr
    assert "Traceback" not in third.stderr
    assert list(site.journal.records())[lines:] == []  # refused before any journal entry
    return Played(OLD)


def _stray(site: Site, deploy: tuple[str, ...]) -> Played:
    began = time.time()
    stray = subprocess.Popen(
        [sys.executable, "-c", _STRAY, str(site.env.port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert stray.stdout is not None and stray.stdout.readline().strip() == "listening"
        done = _run(site, *deploy, "--no-monitor")
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"pid {stray.pid}" in done.stdout + done.stderr
    finally:
        stray.kill()
        stray.wait()
        gone = time.time()
        if stray.stdout is not None:
            stray.stdout.close()
    # The foreign listener took its share of new connections until it was gone (the point of
    # the refusal); those requests never reached the service.
    return Played(OLD, (began, gone), "the stray's share")


def _restore_fails(site: Site, rollback: tuple[str, ...], *, after_swap: bool) -> Played:
    """Issue 12 item 2: a failure after the backup was swapped in (the exported rows are
    damaged when the killed rollback resumes) puts back the database that served, serves it
    again with the release that served, and names where everything was kept.

    ``after_swap``: the first run is killed inside its restore, right after the swap and before
    the phase's done record (the restore's own pause point), so only the record journaled before
    the swap says which database served; the resumed run swaps again, and its own snapshot is
    the interrupted run's restore, without the writes made since the backup."""
    everything = site.image_ids()
    lines = len(list(site.journal.records()))
    env = dhash_env(site.base)
    if after_swap:
        env["DHASH_BACKUP_FAULT"] = "restore-after-swap"
    first = subprocess.Popen(
        [dhash_bin(), *rollback], cwd=site.base, env=env, text=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE if after_swap else subprocess.DEVNULL,
    )  # fmt: skip
    try:
        if after_swap:
            assert first.stderr is not None
            paused = "dhash-fault: paused at restore-after-swap"
            assert any(paused in line for line in first.stderr), "the rollback did not pause"
            run_id = _rollback_run(site, lines)
        else:
            hit = site.wait_for_record(
                lambda r: r.phase == "reapply_writes" and r.status == "started", first, after=lines
            )
            assert hit is not None, "the rollback ended before re-applying"
            run_id = hit.deploy_id
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        if first.stderr is not None:
            first.stderr.close()
    killed = site.journal.run(run_id)
    assert killed is not None
    assert killed.status_of("restore") == ("started" if after_swap else "done"), killed.phases
    rows = site.env.root / "rollback" / run_id / "live-rows.jsonl"
    rows.write_text('{"table": "images", "row": {"id": 1\n', encoding="utf-8")
    done = _run(site, *rollback)
    assert done.returncode == 4, done.stdout + done.stderr  # an integrity failure: exit 4
    assert "Traceback" not in done.stderr
    assert "put the database that served back in place" in done.stdout
    assert f"kept: {rows}" in done.stdout and "failed-restore-" in done.stdout
    assert everything <= site.image_ids()
    final = [
        r.detail for r in site.journal.records() if r.deploy_id == run_id and r.phase == RUN_PHASE
    ][-1]
    assert "serves again" in final["service"] and rows.name in " ".join(final["preserved"])
    return Played(NEW, _restore_window(site, run_id), "the restore's outage until the put-back")


_STRAY = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
print("listening", flush=True)
time.sleep(600)
"""


def _outage(played: Played, spans: list[tuple[float, float]]) -> str:
    """The failed requests' span inside the documented window, for the matrix row."""
    if played.window is None or not spans:
        return ""
    start, end = played.window
    first, last = min(b for b, _ in spans), max(e for _, e in spans)
    return (
        f"; outage {last - first:.1f} s ({len(spans)} failed, {first - start:+.1f} s to "
        f"{last - start:+.1f} s into {played.why}, a window of {end - start:.1f} s)"
    )


@pytest.mark.matrix(keep=1)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_every_interruption_ends_with_one_release_serving_and_no_write_lost(
    case: Case, tmp_path: Path
) -> None:
    site = Site.create(tmp_path / "site")
    began = time.monotonic()
    try:
        first = site.deploy(wheel_for(OLD))
        assert first.returncode == 0, first.stdout + first.stderr
        _setup(site, case)
        before = {i for seed in range(3) for i in site.ingest(seed)}
        auth = {"Authorization": f"Bearer {TOKEN}"}
        reviewed, decided = decide_reviews(site.env.url, auth, "m", 3, "")
        ready = time.monotonic()
        # The load covers the interruption and the next command (capped at LOAD_SECONDS).
        with LoadGenerator(
            site.env.port, TOKEN, threads=2, max_seconds=LOAD_SECONDS, seed_base=10_000,
            failure_pause=0.005,
        ) as load:  # fmt: skip
            played = _play(site, case)
        playing = time.monotonic() - ready
        acknowledged = {i for ids in load.result.ingested.values() for i in ids}
        _one_release_serves(site, played.expected)
        assert before | reviewed | acknowledged <= site.image_ids()
        kept = review_states(site.env.database_url, set(decided))
        assert kept == decided  # the reviewers' decisions kept
        failed = list(zip(load.result.failures, load.result.failure_spans, strict=True))
        start, end = played.window or (0.0, -1.0)
        outside = [f"{what} at {b:.3f}" for what, (b, _e) in failed if not start <= b <= end]
        outcome = (
            f"{played.expected} serves alone; {len(acknowledged)} acknowledged ingests kept; "
            f"{load.result.requests} requests in the first "
            f"{min(load.result.seconds, LOAD_SECONDS):.0f} s of {playing:.0f} s, "
            f"{load.result.failed} failed"
            f"{_outage(played, load.result.failure_spans)}; {time.monotonic() - began:.0f} s "
            f"(setup {ready - began:.0f} s)"
        )
        print(f"\ninterruption matrix | {case.name} | {outcome}")
        assert outside == [], outside[:10]
    finally:
        site.shutdown()
