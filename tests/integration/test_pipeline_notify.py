"""A deploy's or rollback's notice that cannot even be built is reported, never raised."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

from dhash_rollout.environments import load_environment
from dhash_rollout.runs.context import RunContext
from dhash_rollout.runs.journal import Journal
from dhash_rollout.runs.notices import notify
from dhash_rollout.runs.runlog import open_run_log
from dhash_rollout.targets import Target


def test_a_notice_with_a_line_break_in_its_initiator_is_reported_not_raised(
    tmp_path: Path,
) -> None:
    said: list[str] = []
    log_path, handle, logger = open_run_log(tmp_path / "logs", "deploy", "staging")
    with handle:
        ctx = RunContext(
            kind="deploy",
            env=load_environment("staging", tmp_path),
            target=cast(Target, object()),  # a notice never touches the target
            journal=Journal(tmp_path / "journal.jsonl"),
            run_id="deploy-test",
            base=tmp_path,
            log_dir=tmp_path / "logs",
            backup_dir=tmp_path / "backups",
            logger=logger,
            say=said.append,
        )
        outcome = notify(ctx, "deploy", "starting", initiator="ops\r\nBcc: x@example.org")
    assert "single line" in outcome["notification"]["error"]
    assert any("notification not sent" in line for line in said)
    events = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]
    assert any(e["event"] == "notification_not_sent" for e in events)
