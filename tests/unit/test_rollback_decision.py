"""Which release and which backup a rollback goes back to, as plain data: facts in, choice out."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from dhash_rollout.rollback.decision import (
    BackupCandidate,
    DeployFootprint,
    SchemaReach,
    TargetFacts,
    backup_misfit,
    choose_target,
    pick_backup,
)

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


# --- issue 12 item 2: the backup must fit the target release's schema, checked before the stop

REACH = SchemaReach(
    target_revision="0003_head",
    target_known=frozenset({"0001_init", "0002_more", "0003_head"}),
    downgradable=frozenset({"9001_reversible"}),
)
AT_HEAD = BackupCandidate("b/at-head.zip", "0003_head")
OLDER = BackupCandidate("b/older.zip", "0001_init")
REVERSIBLE = BackupCandidate("b/reversible.zip", "9001_reversible")
PAST_IRREVERSIBLE = BackupCandidate("b/irreversible.zip", "9002_irreversible")
EMPTY = BackupCandidate("b/empty.zip", None)


@pytest.mark.parametrize(
    ("revision", "fits"),
    [
        ("0003_head", True),  # the target's own schema
        ("0001_init", True),  # the target's migrations upgrade it
        ("9001_reversible", True),  # the newer release takes it down
        ("9002_irreversible", False),  # newer, and its downgrade refuses
        ("7777_unknown", False),  # no release knows it
        (None, True),  # an empty database: the target's migrations build it
    ],
)
def test_a_backup_fits_the_target_schema_when_some_migration_reaches_it(
    revision: str | None, fits: bool
) -> None:
    assert (backup_misfit(revision, REACH) is None) is fits


@pytest.mark.parametrize(
    ("preferred", "candidates", "named", "backup", "refused", "noted"),
    [
        # the deploy's own backup fits: kept
        (AT_HEAD, (PAST_IRREVERSIBLE, AT_HEAD), False, "b/at-head.zip", None, False),
        # the youngest backup was taken after the irreversible migration: the next that fits
        (PAST_IRREVERSIBLE, (PAST_IRREVERSIBLE, OLDER), False, "b/older.zip", None, True),
        # a reversible newer schema is fine (the downgrade takes it there)
        (REVERSIBLE, (REVERSIBLE,), False, "b/reversible.zip", None, False),
        # the operator named one that cannot fit: refused, naming the one that does
        (PAST_IRREVERSIBLE, (PAST_IRREVERSIBLE, OLDER), True, None, "b/older.zip fits", False),
        # ... and with none that fits, refused all the same
        (PAST_IRREVERSIBLE, (PAST_IRREVERSIBLE,), True, None, "cannot be restored", False),
        # nothing fits at all: refused, saying what the backups hold
        (PAST_IRREVERSIBLE, (PAST_IRREVERSIBLE,), False, None, "9002_irreversible", False),
        # no preferred one: the newest that fits
        (None, (PAST_IRREVERSIBLE, EMPTY, OLDER), False, "b/empty.zip", None, False),
        # no backup at all: none (the plan says a restore is needed but none is available)
        (None, (), False, None, None, False),
    ],
)
def test_the_backup_to_restore_is_one_whose_schema_the_target_can_serve(  # noqa: PLR0917 - one case-table row
    preferred: BackupCandidate | None,
    candidates: tuple[BackupCandidate, ...],
    named: bool,
    backup: str | None,
    refused: str | None,
    noted: bool,
) -> None:
    pick = pick_backup(preferred, candidates, REACH, named=named)
    assert pick.backup == backup
    if refused is None:
        assert pick.refusal is None
    else:
        assert pick.refusal is not None and refused in pick.refusal
    assert (pick.note is not None) is noted
