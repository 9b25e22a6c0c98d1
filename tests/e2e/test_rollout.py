"""End to end on loopback: deploy v1, ingest, deploy v2 (a real second build with a changed
migration) and roll back by hand, both under steady load: zero failed requests, data intact.

The scenario runs in a network namespace of its own (``unshare --net``: its own loopback, no
other traffic, the kernel's default ``net.ipv4.tcp_migrate_req=0``): zero failed requests comes
from the switch itself (readiness of the new process, connection steering, drain), not from a
kernel setting.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.release_builds import CHECKOUT, wheel_for

pytestmark = pytest.mark.slow

NETNS_SETUP = "ip link set lo up"


def _run_scenario(workdir: Path) -> dict[str, object]:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs util-linux unshare and iproute2 ip to isolate the network")
    wheels = [str(wheel_for("1.0.0")), str(wheel_for("2.0.0", migration="reversible"))]
    command = f'{NETNS_SETUP} && exec "$0" -m tests.support.rollout_scenario "$@"'
    done = subprocess.run(
        ["unshare", "--net", "--", "sh", "-c", command, sys.executable, str(workdir), *wheels],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(report, dict)
    return report


def test_deploy_and_rollback_under_load_fail_no_request_and_lose_no_write(
    tmp_path: Path,
) -> None:
    report = _run_scenario(tmp_path / "site")
    assert report["migrate_req"] == "0"  # a fresh namespace has the kernel's default
    assert report["deploy_v1"]["returncode"] == 0, report["deploy_v1"]  # type: ignore[index]
    for step in ("deploy_v2", "rollback"):
        seen = report[step]
        assert isinstance(seen, dict)
        assert seen["returncode"] == 0, seen["output"]
        assert seen["covered"], f"{step}: the load did not span the whole command"
        assert seen["requests"] > 50, seen
        assert seen["failed"] == 0, seen["failures"]
        assert seen["ingested_ids"], f"{step}: no ingest was acknowledged under load"
    # Both switches steered new connections to the new process while the old one drained.
    assert report["deploy_steered"] is True and report["rollback_steered"] is True
    assert report["v2_version"] == "2.0.0"
    assert report["v2_revision"] == "9001_reversible_probe"
    assert report["final_version"] == "1.0.0"
    assert report["final_revision"] == report["expected_revision"]
    phases = report["rollback_phases"]
    assert isinstance(phases, dict)
    assert phases["downgrade"] == "done" and phases["restore"] == "skipped"
    final = set(report["final_ids"])  # type: ignore[arg-type]
    acknowledged = set(report["before_ids"])  # type: ignore[arg-type]
    for step in ("deploy_v2", "rollback"):
        acknowledged |= set(report[step]["ingested_ids"])  # type: ignore[index]
    assert acknowledged <= final, sorted(acknowledged - final)
