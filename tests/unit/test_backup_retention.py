"""The retention policy on plain data: ages, expiry, and the backup that is never deleted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dhash_rollout.backup.catalog import BackupInfo
from dhash_rollout.backup.faults import FaultHook
from dhash_rollout.backup.retention import MAX_AGE_DAYS, check_retention_days, expired, parse_age
from dhash_service.errors import ConfigError

NOW = datetime(2024, 3, 1, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("30d", timedelta(days=30)),
        ("30", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("2w", timedelta(weeks=2)),
        (" 1d ", timedelta(days=1)),
        ("36500d", timedelta(days=MAX_AGE_DAYS)),
        ("5214w", timedelta(weeks=5214)),
    ],
)
def test_ages(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize(
    "text", ["", "d", "-1d", "1y", "1.5d", "thirty", "36501d", "5215w", "99999999999999999999d"]
)
def test_bad_ages_are_usage_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_age(text)


@pytest.mark.parametrize("days", [0, -3, MAX_AGE_DAYS + 1, 10**20])
def test_retention_days_out_of_range_are_usage_errors(days: int) -> None:
    with pytest.raises(ConfigError):
        check_retention_days(days)


def _info(days_old: float) -> BackupInfo:
    return BackupInfo(
        path=Path(f"/b/{days_old}.zip"),
        sha256="0" * 64,
        created_at=NOW - timedelta(days=days_old),
        env="production",
        schema_revision=None,
        size=1,
    )


def test_only_backups_older_than_the_limit_expire() -> None:
    backups = [_info(1), _info(29.9), _info(30.1), _info(90)]
    assert expired(backups, now=NOW, older_than=timedelta(days=30), keep=None) == backups[2:]


def test_the_kept_backup_never_expires_even_when_old() -> None:
    backups = [_info(40), _info(50)]
    assert expired(backups, now=NOW, older_than=timedelta(days=30), keep=backups[0].path) == [
        backups[1]
    ]


def test_fault_hook_pauses_only_at_its_point(monkeypatch: pytest.MonkeyPatch) -> None:
    paused: list[str | None] = []
    hook = FaultHook("dump-50")
    monkeypatch.setattr(FaultHook, "_pause", lambda self: paused.append(self.point))
    hook.reach("after-zip-rename")
    hook.reach_fraction("dump", 0.49)
    hook.reach_fraction("restore", 0.9)
    assert paused == []
    hook.reach_fraction("dump", 0.5)
    hook.reach_fraction("dump", 0.9)  # once only
    assert paused == ["dump-50"]
    FaultHook(None).reach_fraction("dump", 1.0)
    assert paused == ["dump-50"]
