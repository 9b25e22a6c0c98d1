"""What ``migrate --dry-run --source`` names (a URL, a backup, a SQLite file, or nothing usable),
and which scratch databases a killed rehearsal left: case tables for the pure parts of
``dhash_rollout.backup.scratch``."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.backup.scratch import (
    SourceSpec,
    classify_source,
    scratch_database_name,
    stale_scratch_databases,
)
from dhash_service.errors import ConfigError, DhashError, NotFound

SQLITE = b"SQLite format 3\x00"
ZIP = b"PK\x03\x04" + b"\x00" * 12


@pytest.mark.parametrize(
    ("name", "head", "kind"),
    [
        ("dhash_production_20261203_101500.zip", ZIP, "backup"),
        ("renamed-backup", ZIP, "backup"),
        ("damaged.zip", b"garbage garbage!", "backup"),  # its verification says what is wrong
        ("dhash.sqlite3", SQLITE, "sqlite"),
        ("copy.db", SQLITE, "sqlite"),
    ],
)
def test_a_path_is_a_backup_or_a_sqlite_file_by_its_first_bytes(
    tmp_path: Path, name: str, head: bytes, kind: str
) -> None:
    path = tmp_path / name
    path.write_bytes(head + b"rest")
    assert classify_source(str(path)) == SourceSpec(kind, path=path)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("postgresql+psycopg://u:p@127.0.0.1:5432/dhash", "postgresql"),
        ("postgresql://127.0.0.1/dhash", "postgresql"),
        ("sqlite:////var/lib/dhash/dhash.sqlite3", "sqlite"),
    ],
)
def test_a_url_is_a_database_of_its_backend(text: str, kind: str) -> None:
    assert classify_source(text).kind == kind


@pytest.mark.parametrize(
    ("text", "error", "code", "says"),
    [
        ("", ConfigError, 2, "--source is empty"),
        ("mysql://127.0.0.1/dhash", ConfigError, 2, "not mysql"),
        ("postgresql://127.0.0.1", ConfigError, 2, "must name a database"),
        ("sqlite://", ConfigError, 2, "file-backed"),
        ("postgresql://u:s3cretpass@h:port/dhash", ConfigError, 2, "invalid database URL"),
    ],
)
def test_an_unusable_url_is_a_usage_error_without_its_password(
    text: str, error: type[DhashError], code: int, says: str
) -> None:
    with pytest.raises(error, match=says) as err:
        classify_source(text)
    assert err.value.exit_code == code and "s3cretpass" not in err.value.message


def test_a_missing_path_is_not_found_and_a_directory_or_other_file_a_usage_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(NotFound, match="no such file") as missing:
        classify_source(str(tmp_path / "absent.zip"))
    assert missing.value.exit_code == 1  # as restore and backup verify of a missing file
    with pytest.raises(ConfigError, match="is not a file"):
        classify_source(str(tmp_path))
    notes = tmp_path / "notes.txt"
    notes.write_text("not a backup\n")
    with pytest.raises(ConfigError, match="neither a backup archive") as other:
        classify_source(str(notes))
    assert other.value.exit_code == 2


def test_only_this_hosts_scratch_databases_of_dead_processes_are_stale() -> None:
    mine = [scratch_database_name(pid, "0a1b2c3d", "feedf00d") for pid in (11, 12)]
    other_host = scratch_database_name(11, "0a1b2c3d", "00000000")
    names = [*mine, other_host, "dhash", "dhash_rst_20261203_101500", "dhash_scratch_feedf00d_x"]
    assert stale_scratch_databases(names, "feedf00d", alive=lambda pid: pid == 12) == [mine[0]]
    assert stale_scratch_databases(names, "feedf00d", alive=lambda _pid: True) == []
    assert all(len(n) <= 63 for n in mine)  # PostgreSQL's identifier limit
