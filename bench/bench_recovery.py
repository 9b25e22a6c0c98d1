"""Recovery: seconds from a bad release's fault starting to the old release healthy again.

``bench_monitor.py --recovery`` runs this. A real deploy site (the tests' ``Site``: releases
installed from wheels of this checkout, a real supervisord, the service on 127.0.0.1), release
1.0.0 serving; then, per gate, ``dhash deploy`` of release 2.0.0 made really bad by its own
fault-injection setting (``--release-setting``), time-scaled, with the load generator running
while the monitor watches. Read back from the journal (its timestamps, not the benchmark's):

* fault start: the switch (``activate``'s ``switched_at``): the fault is on from the new
  release's first request;
* detected: the ``monitor.verdict`` record (or the phase that failed first, e.g. ``health``);
* healthy again: the automatic rollback's ``health`` phase done, i.e. 1.0.0 serves and answers
  ``/health`` and ``/ready`` (its smoke tests follow; their end is reported too).

At production cadence the detection part scales (the fail poll's offset times the scale) and the
rollback does not (it is real work): that figure is the fail poll's production offset plus the
measured rollback seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from tests.integration.monitor_support import gates_file
from tests.support.load import LoadGenerator
from tests.support.release_builds import dhash_bin, dhash_env, wheel_for
from tests.support.rollout_site import TOKEN, Site

from dhash_rollout.monitor.ledger import read_rows
from dhash_rollout.runs.journal import JournalRecord

SCALE = 120
ALLOW = "DHASH_FAULT_ALLOW_PRODUCTION=true"  # the site's environment is named production
FAULTS = {
    "extractionFailureRate": "DHASH_FAULT_EXTRACTION_FAILURE_SHARE=0.5",
    "p95HashTime": "DHASH_FAULT_HASH_LATENCY_SECONDS=0.4",
    "lowConfidenceQueue": "DHASH_FAULT_LOW_CONFIDENCE=true",
    "healthFailures": "DHASH_FAULT_HEALTH_FAILING=true",
}


def _ts(record: JournalRecord) -> float:
    return datetime.fromisoformat(record.ts).timestamp()


def _deploy(site: Site, gate: str, setting: str, seed: int) -> subprocess.CompletedProcess[str]:
    argv = [
        dhash_bin(), "deploy", "--env", "production", "--source", str(wheel_for("2.0.0")),
        "--time-scale", str(SCALE), "--gates-config", "gates.json",
        "--release-setting", setting, "--release-setting", ALLOW,
    ]  # fmt: skip
    out = site.base / f"deploy-{gate}.out"
    lines = len(list(site.journal.records()))
    with out.open("w") as sink:
        proc = subprocess.Popen(
            argv, cwd=site.base, env=dhash_env(site.base), stdout=sink, stderr=subprocess.STDOUT
        )
        site.wait_for_record(
            lambda r: r.phase in ("monitor", "auto_rollback", "undo"), proc, after=lines
        )
        with LoadGenerator(
            site.env.port, TOKEN, threads=3, max_seconds=40, ingest_every=1, seed_base=seed
        ):
            proc.wait(timeout=300)
    return subprocess.CompletedProcess(argv, proc.returncode, out.read_text(), "")


def _one(site: Site, gate: str, setting: str, seed: int) -> dict[str, object]:
    before = {r.deploy_id for r in site.journal.runs()}
    done = _deploy(site, gate, setting, seed)
    runs = [r for r in site.journal.runs() if r.deploy_id not in before]
    deploy = next(r for r in runs if r.kind == "deploy")
    child = next((r for r in runs if r.kind == "rollback"), None)
    records = list(site.journal.records())
    mine = [r for r in records if r.deploy_id == deploy.deploy_id]
    at = deploy.detail_of("activate").get("switched_at")
    began_activate = next(r for r in mine if r.phase == "activate")
    # No switch: the new release never became ready (its /health failing fails the switch's
    # readiness check), so the old one never stopped serving; the fault started with its start.
    switched = float(at) if at is not None else _ts(began_activate)
    verdict = next((r for r in mine if r.detail.get("event") == "monitor.verdict"), None)
    first_failed = next((r for r in mine if r.status == "failed"), None)
    caught = verdict or first_failed
    row: dict[str, object] = {
        "gate": gate,
        "exit": done.returncode,
        "caught_by": "monitor" if verdict else (first_failed.phase if first_failed else None),
        "failed_gate": deploy.detail_of("monitor").get("failed_gate"),
        "switched": at is not None,
    }
    if at is None:
        row["healthy_again_s"] = 0.0  # the old release served throughout
    if caught is not None:
        row["detect_s"] = round(_ts(caught) - switched, 2)
    if child is not None:
        theirs = [r for r in records if r.deploy_id == child.deploy_id]
        healthy = next((r for r in theirs if r.phase == "health" and r.status == "done"), None)
        smoked = next((r for r in theirs if r.phase == "smoke" and r.status == "done"), None)
        began = next(r for r in theirs)
        row["rollback_ok"] = child.outcome == "done"
        if healthy is not None:
            row["healthy_again_s"] = round(_ts(healthy) - switched, 2)
            row["rollback_to_healthy_s"] = round(_ts(healthy) - _ts(began), 2)
        if smoked is not None:
            row["smoke_done_s"] = round(_ts(smoked) - switched, 2)
    ledger = deploy.detail_of("monitor").get("ledger")
    if ledger and verdict is not None:
        polls = [r for r in read_rows(Path(str(ledger))) if r["kind"] == "poll"]
        offset = float(polls[-1]["offset"]) if polls else 0.0
        row["fail_poll"] = len(polls)
        row["production_detect_s"] = round(offset * SCALE, 1)
        if "rollback_to_healthy_s" in row:
            rollback_s = float(str(row["rollback_to_healthy_s"]))
            row["production_healthy_s"] = round(offset * SCALE + rollback_s, 1)
    return row


def recovery(tmp: Path) -> list[dict[str, object]]:
    site = Site.create(tmp / "site")
    gates_file(site.base, p95HashTime={"minSamples": 5}, extractionFailureRate={"minSamples": 5})
    rows = []
    try:
        first = site.deploy(wheel_for("1.0.0"))
        assert first.returncode == 0, first.stdout + first.stderr
        wheel_for("2.0.0")  # built before any clock starts
        for n, (gate, setting) in enumerate(FAULTS.items()):
            began = time.monotonic()
            rows.append(_one(site, gate, setting, seed=(n + 1) * 10_000_000))
            rows[-1]["wall_s"] = round(time.monotonic() - began, 1)
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # kept if a later one dies
            if gate == "lowConfidenceQueue":
                _clear_review_queue(site)
    finally:
        site.shutdown()
    return rows


def _clear_review_queue(site: Site) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(site.env.database_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE review_items SET status = 'rejected'"))
    finally:
        engine.dispose()
