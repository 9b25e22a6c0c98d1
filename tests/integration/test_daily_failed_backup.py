"""``check daily`` agrees with ``backup list`` about a backup whose verification failed
(issue 12 item 9): the age check passed on it while the list said failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.backup import create_backup, list_backups
from dhash_rollout.backup.catalog import FAILED, write_record
from dhash_rollout.checks.daily import check_backup_age
from dhash_rollout.environments import load_environment
from dhash_rollout.migrate import upgrade
from dhash_service.errors import CheckFailed
from tests.support.release_builds import write_environments


def test_a_failed_latest_backup_fails_the_daily_age_check(tmp_path: Path) -> None:
    write_environments(tmp_path)
    env = load_environment("production", tmp_path)
    env.data_dir.mkdir(parents=True)
    upgrade(env.database_url)
    made = create_backup(env, tmp_path / "backups")
    assert check_backup_age(env, tmp_path, now=None).startswith("backup age: 0 hours")
    write_record(made.path, made.sha256, ok=False, restore_tested=False, error="test")
    (listed,) = list_backups(tmp_path / "backups", "production")
    assert listed.state == FAILED
    with pytest.raises(CheckFailed, match=rf"latest backup {made.path.name} failed its verif"):
        check_backup_age(env, tmp_path, now=None)
