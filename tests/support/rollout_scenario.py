"""The end-to-end rollout, as a program: deploy v1, ingest, deploy v2 (a real second build with
one more migration) under load, roll back under load; print what the load saw as JSON.

Run by ``tests/e2e/test_rollout.py`` inside its own network namespace (loopback only)::

    python -m tests.support.rollout_scenario WORKDIR WHEEL_V1 WHEEL_V2

The wheels are built by the caller: a namespace without a network cannot reach a package index.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from dhash_rollout.runs.schema import database_revision
from tests.support.load import LoadGenerator
from tests.support.release_builds import checkout_head
from tests.support.rollout_site import TOKEN, Site

LOAD_CAP_SECONDS = 45.0  # a hard stop for the client threads, whatever happens


def _under_load(site: Site, seed_base: int, *args: str) -> dict[str, Any]:
    """Run one ``dhash`` command while three client threads hammer the service."""
    with LoadGenerator(
        site.env.port, TOKEN, threads=3, max_seconds=LOAD_CAP_SECONDS, seed_base=seed_base
    ) as load:
        time.sleep(1.0)  # steady traffic before the switch starts
        began = time.monotonic()
        done = site.run(*args, timeout=LOAD_CAP_SECONDS)
        took = time.monotonic() - began
        time.sleep(1.0)  # and after it ends
    result = load.result
    return {
        "returncode": done.returncode,
        "output": (done.stdout + done.stderr)[-3000:],
        "command_seconds": round(took, 2),
        "load_seconds": round(result.seconds, 2),
        "covered": took + 2.0 < result.seconds + 0.5,
        "requests": result.requests,
        "failed": result.failed,
        "failures": result.failures[:20],
        "statuses": dict(result.statuses),
        "ingested_ids": sorted(i for ids in result.ingested.values() for i in ids),
    }


def main(workdir: Path, v1: Path, v2: Path) -> dict[str, Any]:
    site = Site.create(workdir)
    report: dict[str, Any] = {
        "migrate_req": Path("/proc/sys/net/ipv4/tcp_migrate_req").read_text().strip()
    }
    try:
        first = site.deploy(v1)
        report["deploy_v1"] = {"returncode": first.returncode, "output": first.stdout[-2000:]}
        if first.returncode != 0:
            return report
        report["before_ids"] = sorted(i for seed in range(5) for i in site.ingest(seed))
        report["deploy_v2"] = _under_load(
            site, 10_000, "deploy", "--env", "production", "--no-monitor", "--source", str(v2)
        )
        deploy = site.journal.last_run("deploy")
        report["deploy_steered"] = deploy.detail_of("activate").get("steered") if deploy else None
        report["v2_revision"] = database_revision(site.env.database_url)
        report["v2_version"] = site.health()["version"]
        report["rollback"] = _under_load(
            site, 20_000, "rollback", "--env", "production", "--reason", "e2e-manual-rollback"
        )
        report["final_version"] = site.health()["version"]
        report["final_revision"] = database_revision(site.env.database_url)
        report["expected_revision"] = checkout_head()
        report["final_ids"] = sorted(site.image_ids())
        last = site.journal.last_run("rollback")
        report["rollback_phases"] = {p: s.status for p, s in last.phases.items()} if last else {}
        report["rollback_steered"] = last.detail_of("activate").get("steered") if last else None
    finally:
        site.shutdown()
    return report


if __name__ == "__main__":
    print(json.dumps(main(*(Path(arg) for arg in sys.argv[1:4]))))
