"""``make demo`` end to end: the whole rollout demo, as a user runs it, in a pipe.

It builds releases A and B from this checkout, deploys A, deploys B (its hash-latency fault on)
through the guarded pipeline under load, and must exit 0 only because the monitor caught B by
the P95 hash-time gate, the deploy rolled back to A by itself, no request failed and nothing
acknowledged was lost; its ``outcome.json`` says so fact by fact.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.release_builds import CHECKOUT

pytestmark = pytest.mark.slow
# About a minute on an idle machine; minutes when 2 shared cores are loaded (see docs/demo.md).
DEMO_DEADLINE_SECONDS = 540


@pytest.mark.timeout(DEMO_DEADLINE_SECONDS + 60)
def test_make_demo_catches_the_bad_release_rolls_back_and_loses_nothing(tmp_path: Path) -> None:
    workdir = tmp_path / "demo-out"
    done = subprocess.run(
        [sys.executable, "-m", "dhash_rollout.demo", "--workdir", str(workdir)],
        cwd=CHECKOUT,
        capture_output=True,
        text=True,
        timeout=DEMO_DEADLINE_SECONDS,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    outcome = json.loads((workdir / "rollout" / "outcome.json").read_text())
    facts = outcome["facts"]
    assert outcome["ok"] is True and outcome["exit_code"] == 0
    assert (facts["verdict"], facts["failed_gate"]) == ("failed", "p95HashTime")
    assert facts["rolled_back"] is True
    assert facts["serving_after"].endswith("+a")
    assert facts["failed_requests"] == 0 and facts["requests"] > 50
    assert facts["lost_writes"] == 0 and facts["acked_while_b"] > 0
    assert facts["decisions"] >= 1 and facts["lost_decisions"] == 0
    assert facts["notices_webhook"] >= 3 and facts["webhook_rejected"] == 0
    # A pipe gets the plain story: the steps the issue names, in order.
    order = [
        "== 1. Release A",
        "sha256sum -c backups/",
        ": OK",
        "== 2. Release B",
        "== 3. The monitor",
        "time-scaled",
        "== 4. The end",
        "HTML report: ",
        "DEMO PASSED",
    ]
    positions = [done.stdout.find(words) for words in order]
    assert -1 not in positions, dict(zip(order, positions, strict=True))
    assert positions == sorted(positions)
    assert "\x1b[" not in done.stdout  # no escape codes in a pipe
    # Nothing of the demo keeps running: its supervisord is shut down.
    status = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, check=False)
    assert status.stdout == b""
