"""What a rollback answers with ``--json``: what could not be carried over is at the top level,
not buried in a phase's detail (issue 12 item 3)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from dhash_rollout.rollback.decision import RollbackFacts, plan_rollback, rollback_headline
from dhash_rollout.rollback.run import RollbackResult

FACTS = RollbackFacts(
    env="production",
    url="http://127.0.0.1:1",
    current_version="2.0.0",
    target_version="1.0.0",
    current_revision="b",
    target_revision="a",
    downgrade_reversible=False,
    database_ok=True,
    backup="backups/b.zip",
    backup_requested=False,
)


def test_the_json_answer_names_what_was_not_carried_over() -> None:
    lost = {"images": "1 row changed since the backup, not replayed"}
    phases = {"reapply_writes": {"total_inserted": 3, "not_carried": lost}}
    result = RollbackResult(
        "rollback-1", "production", True, plan_rollback(FACTS), None, None, phases
    )
    assert result.to_dict()["not_carried"] == lost


def test_nothing_lost_is_an_empty_object() -> None:
    result = RollbackResult("rollback-1", "production", True, plan_rollback(FACTS), None)
    assert result.to_dict()["not_carried"] == {}


@pytest.mark.parametrize(
    ("changes", "headline"),
    [
        ({}, "Rolling production back from 2.0.0 to 1.0.0"),
        (
            {"target_version": "2.0.0", "backup_requested": True},
            "Rolling production back: restoring its data from backups/b.zip under 2.0.0",
        ),
        (
            {"target_version": "2.0.0", "target_revision": "b", "others_serving": True},
            "Rolling production back: stopping every release but 2.0.0",
        ),
        ({"current_version": None}, "Rolling production back from nothing to 1.0.0"),
    ],
)
def test_the_start_notice_never_reads_from_a_release_to_itself(
    changes: dict[str, object], headline: str
) -> None:
    """Issue 12 item 9: "rolling back from 0.1.0 to 0.1.0" for a data restore."""
    assert rollback_headline(replace(FACTS, **changes)) == headline  # type: ignore[arg-type]
