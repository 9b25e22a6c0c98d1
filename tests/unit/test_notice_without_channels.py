"""A run's notice with no channel configured says so (issue 12 item 9), instead of a check
mark that reads as "notified"."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import cast

from dhash_rollout.environments import load_environment
from dhash_rollout.runs.context import RunContext
from dhash_rollout.runs.journal import Journal
from dhash_rollout.runs.notices import notify
from dhash_rollout.targets import Target


class _Logger:
    def __init__(self) -> None:
        self.warnings: list[str] = []

    def warning(self, event: str, **_fields: object) -> None:
        self.warnings.append(event)


def test_no_channel_is_said_and_recorded(tmp_path: Path) -> None:
    env = replace(load_environment("staging", tmp_path), channels=())
    said: list[str] = []
    logger = _Logger()
    ctx = RunContext(
        "deploy", env, cast(Target, object()), Journal(tmp_path / "j.jsonl"), "deploy-1",
        tmp_path, tmp_path / "logs", tmp_path / "backups", logger, said.append,
    )  # fmt: skip
    detail = notify(ctx, "deploy", "Deploying 1.0.0 to staging")
    assert detail == {"notification": {"none": "no channel is configured"}}
    assert said == ["    no notification channel is configured for staging: nothing was sent"]
    assert logger.warnings == ["notification_not_sent"]
    assert not (tmp_path / "logs").exists()  # nothing was written anywhere
