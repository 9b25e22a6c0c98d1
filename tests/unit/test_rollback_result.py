"""What a rollback answers with ``--json``: what could not be carried over is at the top level,
not buried in a phase's detail (issue 12 item 3)."""

from __future__ import annotations

from dhash_rollout.rollback.decision import RollbackFacts, plan_rollback
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
