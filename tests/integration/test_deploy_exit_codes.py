"""A failed deploy exits with its error's own code, as ``rollback`` and every other command do
(issue 12 item 9), not the 1 of a failed check whatever the cause: its backup phase meeting a
backup that another run is writing is 3 ("another run holds it"), on the console and as
``exit_code`` in ``--json`` (an integrity failure, 4, takes the same path).

The lock is real: the backup lock of the environment, held here as ``dhash backup`` holds it.
The deploy stops at its backup phase, before anything is installed or switched.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from dhash_rollout.backup.naming import lock_path
from dhash_rollout.runs.locking import hold_lock
from dhash_rollout.settings import ToolkitSettings
from tests.support.release_builds import CHECKOUT
from tests.support.rollout_site import Site


def test_a_deploy_whose_backup_is_locked_by_another_backup_exits_3_in_text_and_json(
    tmp_path: Path,
) -> None:
    site = Site.create(tmp_path / "site")
    database = Path(site.env.database_url.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(database) as conn:  # a database exists: the deploy backs it up first
        conn.execute("CREATE TABLE scratch (id INTEGER PRIMARY KEY)")
    backup_dir, _ = ToolkitSettings.load().work_dirs(site.base)
    args = ("deploy", "--env", "production", "--no-monitor", "--source", str(CHECKOUT))
    with hold_lock(lock_path(backup_dir, site.env.name), "backup"):
        done = site.run(*args)
        answer = json.loads(site.run(*args, "--json").stdout)

    assert done.returncode == 3, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "FAILED: production" in done.stdout and "backup" in done.stderr
    run = site.journal.last_run("deploy")
    assert run is not None and run.outcome == "failed"
    assert run.status_of("backup") == "failed" and run.status_of("install") is None
    assert answer["ok"] is False and answer["exit_code"] == 3, answer
    assert "held by" in answer["error"]
