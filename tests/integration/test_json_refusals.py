"""``--json`` answers a refusal with a JSON object too (issue 12 item 9): a monitor or a script
reading stdout gets the reason and the exit code, not an empty stream."""

from __future__ import annotations

import json
from pathlib import Path

from dhash_rollout.runs.locking import hold_lock
from dhash_rollout.runs.paths import lock_path
from tests.support.rollout_site import Site


def test_a_rollback_with_nothing_to_roll_back_answers_json(tmp_path: Path) -> None:
    site = Site.create(tmp_path / "site")
    done = site.run("rollback", "--env", "production", "--reason", "r", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and answer["refused"] is True and answer["exit_code"] == 1
    assert "nothing to roll back to" in answer["error"]


def test_a_deploy_refused_by_a_held_lock_answers_json(tmp_path: Path) -> None:
    site = Site.create(tmp_path / "site")
    site.env.root.mkdir(parents=True, exist_ok=True)
    with hold_lock(lock_path(site.env), "another deploy"):
        done = site.run(
            "deploy", "--env", "production", "--version", "1.0.0", "--no-monitor", "--json"
        )
    assert done.returncode == 3, done.stdout + done.stderr
    answer = json.loads(done.stdout)
    assert answer["refused"] is True and answer["exit_code"] == 3
    assert "another deploy" in answer["error"] or "held" in answer["error"]
