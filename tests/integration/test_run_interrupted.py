"""SIGTERM during a deploy: the run stops at the next phase boundary, journals it, says and
notifies where it stopped and what to run next, and exits 130 (issue 12 item 8)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from dhash_rollout.runs.interrupt import EXIT_INTERRUPTED
from tests.support.release_builds import dhash_bin, dhash_env, wheel_for
from tests.support.rollout_site import Site

pytestmark = pytest.mark.slow


def test_a_sigterm_during_a_deploy_is_journaled_announced_and_exits_130(tmp_path: Path) -> None:
    site = Site.create(tmp_path / "site")
    wheel = wheel_for("1.0.0")
    proc = subprocess.Popen(
        [dhash_bin(), "deploy", "--env", "production", "--source", str(wheel), "--no-monitor"],
        cwd=site.base,
        env=dhash_env(site.base),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        hit = site.wait_for_record(lambda r: r.phase == "install" and r.status == "started", proc)
        assert hit is not None, "the deploy ended before installing"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == EXIT_INTERRUPTED, out + err
        assert "Traceback" not in err
        assert "interrupted at migrate by SIGTERM" in err  # install finished, then it stopped
        assert "next: `dhash deploy --env production --version 1.0.0` resumes it" in err
        assert "`dhash rollback --env production --reason ...` undoes it" in err
        run = site.journal.run(hit.deploy_id)
        assert run is not None and not run.finished  # resumable
        assert run.status_of("install") == "done" and run.status_of("migrate") is None
        assert run.detail_of("interrupted")["signal"] == "SIGTERM"
        notices = [
            json.loads(line)["notification"]
            for path in (site.base / "logs").glob("notifications_*.log")
            for line in path.read_text().splitlines()
            if hit.deploy_id in line
        ]
        assert any(
            n["phase"] == "interrupted-migrate" and "interrupted at migrate" in n["message"]
            for n in notices
        ), notices
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        site.shutdown()
