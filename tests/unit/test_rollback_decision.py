"""Which release and which backup a rollback goes back to, as plain data: facts in, choice out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dhash_rollout.rollback.decision import DeployFootprint, TargetFacts, choose_target

SERVING_2 = TargetFacts(
    current_version="2.0.0",
    installed=frozenset({"1.0.0", "2.0.0", "3.0.0"}),
    made_current=DeployFootprint("2.0.0", "1.0.0", "backups/b-made.zip"),
    latest_backup="backups/b-latest.zip",
)
INTERRUPTED_3 = DeployFootprint("3.0.0", "2.0.0", "backups/b-interrupted.zip")


@pytest.mark.parametrize(
    ("changes", "target", "backup", "newest"),
    [
        # the release the current one's deploy replaced, with that deploy's backup
        ({}, "1.0.0", "backups/b-made.zip", "2.0.0"),
        # --to-release wins over the journal
        ({"to_release": "3.0.0"}, "3.0.0", "backups/b-made.zip", "2.0.0"),
        # a named backup wins over the deploy's own
        ({"backup_named": "/x/b.zip"}, "1.0.0", "/x/b.zip", "2.0.0"),
        # the deploy's backup file is gone: the youngest verified one
        (
            {"made_current": DeployFootprint("2.0.0", "1.0.0", None)},
            "1.0.0",
            "backups/b-latest.zip",
            "2.0.0",
        ),
        # an interrupted deploy: back to what it replaced; its release has the newest migrations
        ({"interrupted": INTERRUPTED_3}, "2.0.0", "backups/b-interrupted.zip", "3.0.0"),
        # an interrupted deploy whose release never got installed: current holds the newest
        (
            {"interrupted": DeployFootprint("4.0.0", "2.0.0", None)},
            "2.0.0",
            "backups/b-latest.zip",
            "2.0.0",
        ),
        # the release the deploy replaced was removed since: nothing to switch to
        ({"installed": frozenset({"2.0.0"})}, None, "backups/b-made.zip", "2.0.0"),
        # ... but a damaged database is restored under the current release
        (
            {"installed": frozenset({"2.0.0"}), "database_ok": False},
            "2.0.0",
            "backups/b-made.zip",
            "2.0.0",
        ),
        # ... and so is a named backup
        (
            {"installed": frozenset({"2.0.0"}), "backup_named": "/x/b.zip"},
            "2.0.0",
            "/x/b.zip",
            "2.0.0",
        ),
        # the first deploy made the current release: nothing before it
        (
            {"made_current": DeployFootprint("2.0.0", None, None)},
            None,
            "backups/b-latest.zip",
            "2.0.0",
        ),
        # no deploy in the journal made the current release
        ({"made_current": None}, None, "backups/b-latest.zip", "2.0.0"),
        # nothing deployed at all
        ({"current_version": None, "made_current": None}, None, "backups/b-latest.zip", None),
        # nothing serving: the deploy of a (former) current release is not consulted
        ({"current_version": None}, None, "backups/b-latest.zip", None),
        # nothing serving, a damaged database: there is no release to restore it under
        ({"current_version": None, "database_ok": False}, None, "backups/b-latest.zip", None),
    ],
)
def test_rollback_target_choice(
    changes: dict[str, Any], target: str | None, backup: str | None, newest: str | None
) -> None:
    choice = choose_target(replace(SERVING_2, **changes))
    assert (choice.target_version, choice.backup, choice.newest_version) == (
        target,
        backup,
        newest,
    )
