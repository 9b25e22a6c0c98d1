from pathlib import Path

import pytest

from dhash_rollout.checks.log_archive import LogFile, is_log_name, plan_archival

DAY = 86400.0
NOW = 1_000 * DAY


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("deploy_production_20240101_120000.log", True),
        ("service.jsonl", True),
        ("service.log.3", True),
        ("service.log.gz", False),
        ("notes.txt", False),
        ("journal.jsonl.bak", False),
    ],
)
def test_log_names(name: str, expected: bool) -> None:
    assert is_log_name(name) is expected


def test_only_closed_unkept_log_files_are_archived() -> None:
    old = NOW - 8 * DAY
    files = [
        LogFile(Path("/l/deploy_production_1.log"), old, 10),
        LogFile(Path("/l/monitor_production_1.log"), NOW - 1 * DAY, 10),  # still recent
        LogFile(Path("/l/service.log"), old, 10),  # the running service's file
        LogFile(Path("/l/readme.txt"), old, 10),  # not a log
        LogFile(Path("/l/service.log.1"), old, 10),
    ]
    planned = plan_archival(files, now=NOW, archive_after_days=7, keep=[Path("/l/service.log")])
    assert [f.path.name for f in planned] == ["deploy_production_1.log", "service.log.1"]
