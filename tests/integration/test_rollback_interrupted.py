"""A rollback run while a deploy lies killed half-way: the schema the dead deploy migrated goes
back down with that deploy's own migrations, and the old release is the only one serving."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from dhash_rollout.runs.schema import database_revision
from tests.support.release_builds import checkout_head, wheel_for
from tests.support.rollout_site import Site, assert_fully_on

pytestmark = pytest.mark.slow


def test_a_rollback_after_a_deploy_killed_between_migrate_and_switch_ends_fully_old(
    tmp_path: Path,
) -> None:
    site = Site.create(tmp_path / "site")
    try:
        first = site.deploy(wheel_for("1.0.0"))
        assert first.returncode == 0, first.stdout + first.stderr
        lines = len(list(site.journal.records()))
        proc = site.popen(
            "deploy",
            "--env",
            "production",
            "--no-monitor",
            "--source",
            str(wheel_for("2.0.0", "reversible")),
        )
        hit = site.wait_for_record(
            lambda r: r.phase == "activate" and r.status == "started", proc, after=lines
        )
        assert hit is not None, "the deploy ended before switching"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert database_revision(site.env.database_url) == "9001_reversible_probe"

        done = site.script("rollback_dhash.sh", "--env", "production", "--reason", "cut-off")
        assert done.returncode == 0, done.stdout + done.stderr

        assert_fully_on(site, "1.0.0")
        assert database_revision(site.env.database_url) == checkout_head()
        killed = site.journal.run(hit.deploy_id)
        assert killed is not None and killed.outcome == "failed"  # superseded, not resumable
        run = site.journal.last_run("rollback")
        assert run is not None and run.outcome == "done"
        assert run.params["newest_version"] == "2.0.0"
        assert run.status_of("downgrade") == "done" and run.status_of("restore") == "skipped"
    finally:
        site.shutdown()
