"""The interruption matrix (issue 12): under a live load generator, the controller is killed
(SIGKILL) or stopped (SIGTERM) at a phase boundary of a deploy or of a rollback, or meets an
incident (a stray listener on the port, a restore that fails after the swap); then the
operator's next command runs. Every case
checks: exactly one release serves, ``release status`` tells the truth (no orphan, no foreign
listener), every acknowledged ingest is in the database, and no request failed (none of these
cases restores data, so there is no documented outage to excuse one).

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
from pathlib import Path

import pytest

from dhash_rollout.runs.journal import RUN_PHASE
from tests.support.load import LoadGenerator
from tests.support.release_builds import dhash_bin, dhash_env, wheel_for
from tests.support.rollout_site import TOKEN, Site

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # a case is two deploys and a rollback

OLD, NEW = "1.0.0", "2.0.0"
LOAD_SECONDS = 55.0


@dataclass(frozen=True)
class Case:
    kind: str  # deploy | rollback | stray
    phase: str | None = None
    sig: signal.Signals = signal.SIGKILL

    @property
    def name(self) -> str:
        if self.kind == "stray":
            return "deploy-beside-a-stray-listener"
        if self.kind == "restore-fails":
            return "rollback-whose-restore-fails-after-the-swap"
        return f"{self.kind}-{self.phase}-{self.sig.name}"


CASES = [
    *(
        Case("deploy", phase, sig)
        for phase in ("backup", "install", "migrate", "activate", "health", "smoke")
        for sig in (signal.SIGKILL, signal.SIGTERM)
    ),
    *(Case("rollback", phase) for phase in ("activate", "downgrade", "smoke")),
    Case("stray"),
    Case("restore-fails"),
]


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
    cases (with an irreversible migration where the rollback must restore)."""
    if case.kind in ("rollback", "restore-fails"):
        kind = "irreversible" if case.kind == "restore-fails" else "reversible"
        done = site.deploy(wheel_for(NEW, kind), "--no-monitor")
        assert done.returncode == 0, done.stdout + done.stderr


def _play(site: Site, case: Case) -> str:
    """Interrupt as the case says, run the operator's next command; the expected release."""
    deploy = (
        "deploy",
        "--env",
        "production",
        "--no-monitor",
        "--source",
        str(wheel_for(NEW, "reversible")),
    )
    rollback = ("rollback", "--env", "production", "--reason", f"matrix {case.name}")
    if case.kind == "deploy":
        assert case.phase is not None
        _interrupt(site, (*deploy, "--no-monitor"), case.phase, case.sig)
        if case.sig is signal.SIGTERM:  # the printed next command: re-run resumes it
            done = _run(site, *deploy, "--no-monitor")
            assert done.returncode == 0, done.stdout + done.stderr
            return NEW
        done = _run(site, *rollback)  # after a kill: roll back (it undoes the deploy)
        assert done.returncode in (0, 1), done.stdout + done.stderr
        if done.returncode == 1:  # killed before anything changed: nothing to roll back
            assert "nothing to roll back to" in done.stderr, done.stderr
        return OLD
    if case.kind == "rollback":
        assert case.phase is not None
        _interrupt(site, rollback, case.phase, case.sig)
        done = _run(site, *rollback)  # run again: it resumes
        assert done.returncode == 0, done.stdout + done.stderr
        return OLD
    if case.kind == "restore-fails":
        return _restore_fails(site, rollback)
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
        if stray.stdout is not None:
            stray.stdout.close()
    return OLD


def _restore_fails(site: Site, rollback: tuple[str, ...]) -> str:
    """Issue 12 item 2: a failure after the backup was swapped in (the exported rows are
    damaged when the killed rollback resumes) puts back the database that served, serves it
    again with the release that served, and names where everything was kept."""
    everything = site.image_ids()
    lines = len(list(site.journal.records()))
    first = subprocess.Popen(
        [dhash_bin(), *rollback], cwd=site.base, env=dhash_env(site.base),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    hit = site.wait_for_record(
        lambda r: r.phase == "reapply_writes" and r.status == "started", first, after=lines
    )
    assert hit is not None, "the rollback ended before re-applying"
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    rows = site.env.root / "rollback" / hit.deploy_id / "live-rows.jsonl"
    rows.write_text('{"table": "images", "row": {"id": 1\n', encoding="utf-8")
    done = _run(site, *rollback)
    assert done.returncode == 4, done.stdout + done.stderr  # an integrity failure: exit 4
    assert "Traceback" not in done.stderr
    assert "put the database that served back in place" in done.stdout
    assert f"kept: {rows}" in done.stdout and "failed-restore-" in done.stdout
    assert everything <= site.image_ids()
    final = [
        r.detail
        for r in site.journal.records()
        if r.deploy_id == hit.deploy_id and r.phase == RUN_PHASE
    ][-1]
    assert "serves again" in final["service"] and rows.name in " ".join(final["preserved"])
    return NEW


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
        # The load covers the interruption and the next command (capped at LOAD_SECONDS).
        with LoadGenerator(
            site.env.port, TOKEN, threads=2, max_seconds=LOAD_SECONDS, seed_base=10_000
        ) as load:
            expected = _play(site, case)
        acknowledged = {i for ids in load.result.ingested.values() for i in ids}
        _one_release_serves(site, expected)
        assert before | acknowledged <= site.image_ids()
        # The stray case: the foreign listener took its share of new connections until the
        # deploy refused (the point of the refusal); those requests were not the service's.
        # A restore is the documented outage: the service is stopped from the export to the
        # put-back (its failures are excused here, and only here; not yet timed per window).
        failures = [] if case.kind in ("stray", "restore-fails") else load.result.failures
        outcome = (
            f"{expected} serves alone; {len(acknowledged)} acknowledged ingests kept; "
            f"{load.result.requests} requests, {load.result.failed} failed"
            f"{'' if failures or not load.result.failed else ' (excused: ' + case.kind + ')'}; "
            f"{time.monotonic() - began:.0f} s"
        )
        print(f"\ninterruption matrix | {case.name} | {outcome}")
        assert failures == [], failures[:10]
    finally:
        site.shutdown()
