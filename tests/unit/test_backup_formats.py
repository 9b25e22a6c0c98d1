"""Pure rules of the backup format: names, the sha256sum line, the manifest, member names."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dhash_rollout.backup.archive import check_member_name
from dhash_rollout.backup.checksum import format_checksum_line, names_archive, parse_checksum_file
from dhash_rollout.backup.manifest import DatabaseInfo, Manifest, MemberDigest, TableStats
from dhash_rollout.backup.naming import (
    backup_name,
    check_env_name,
    is_temp_of_env,
    parse_backup_name,
    temp_name,
)
from dhash_rollout.backup.tables import compare_tables
from dhash_service.errors import ConfigError, IntegrityError

SHA = "0123456789abcdef" * 4
ARCHIVE = Path("/srv/dhash/backups/dhash_production_20240101_120000.zip")


def test_backup_name_is_utc_second_resolution_and_sorts_by_time() -> None:
    name = backup_name("production", datetime(2024, 1, 1, 12, 0, 0, 999, tzinfo=UTC))
    assert name.filename == "dhash_production_20240101_120000.zip"
    assert parse_backup_name(name.filename) == name
    later = backup_name("production", datetime(2024, 1, 2, 0, 0, tzinfo=UTC)).filename
    assert sorted([later, name.filename], reverse=True)[0] == later


@pytest.mark.parametrize(
    "filename",
    [
        "dhash_production_20240101_120000.zip.sha256",
        "dhash_production_20241301_120000.zip",
        "dhash_Production_20240101_120000.zip",
        ".dhash_production_20240101_120000.zip.ab12.tmp",
        "dhash__20240101_120000.zip",
        "backup.zip",
    ],
)
def test_other_files_are_not_backups(filename: str) -> None:
    assert parse_backup_name(filename) is None


@pytest.mark.parametrize("env", ["", "Prod", "a/b", "../x", "x" * 41, "prod env"])
def test_environment_names_that_cannot_name_a_file_are_refused(env: str) -> None:
    with pytest.raises(ConfigError):
        check_env_name(env)


def test_temp_files_are_hidden_from_the_guides_glob_and_attributed_to_their_env() -> None:
    temp = temp_name("dhash_staging_20240101_120000.zip", "ab12")
    assert temp.startswith(".") and temp.endswith(".tmp")
    assert is_temp_of_env(temp, "staging") and not is_temp_of_env(temp, "production")
    assert is_temp_of_env(temp + "-wal", "staging")
    assert not is_temp_of_env("dhash_staging_20240101_120000.zip", "staging")


def test_checksum_line_names_the_archive_under_its_directory() -> None:
    line = format_checksum_line(SHA, ARCHIVE)
    assert line == f"{SHA}  backups/dhash_production_20240101_120000.zip\n"
    entry = parse_checksum_file(line, source=ARCHIVE)
    assert entry.sha256 == SHA and names_archive(entry.name, ARCHIVE)


@pytest.mark.parametrize("text", [f"{SHA} *x.zip\n", f"{SHA}  x.zip"])
def test_binary_marker_and_missing_newline_are_read(text: str) -> None:
    assert parse_checksum_file(text, source=ARCHIVE).name == "x.zip"


@pytest.mark.parametrize(
    "text",
    [
        "",
        f"{SHA.upper()}  x.zip\n",
        f"{SHA}x.zip\n",
        f"{SHA}  x.zip\n\n",
        f"{SHA}  a\\b\n",
        f"{SHA[:-1]}  x.zip\n",
    ],
)
def test_malformed_checksum_lines_are_integrity_errors(text: str) -> None:
    with pytest.raises(IntegrityError, match="malformed"):
        parse_checksum_file(text, source=ARCHIVE)


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("dhash_production_20240101_120000.zip", True),
        ("backups/dhash_production_20240101_120000.zip", True),
        ("/srv/dhash/backups/dhash_production_20240101_120000.zip", True),
        ("dhash/backups/dhash_production_20240101_120000.zip", True),
        ("../backups/dhash_production_20240101_120000.zip", False),
        ("./dhash_production_20240101_120000.zip", False),
        ("backups//dhash_production_20240101_120000.zip", False),
        ("other/dhash_production_20240101_120000.zip", False),
        ("/tmp/dhash_production_20240101_120000.zip", False),
        ("dhash_production_20240101_120001.zip", False),
        ("../x", False),
    ],
)
def test_checksum_name_must_mean_the_archive(name: str, ok: bool) -> None:
    assert names_archive(name, ARCHIVE) is ok


def _manifest() -> Manifest:
    return Manifest(
        env="production",
        created_at="2024-01-01T12:00:00+00:00",
        host="h",
        service_version="0.1.0",
        schema_revision="0002",
        database=DatabaseInfo(
            dialect="sqlite",
            member="database/dhash.sqlite3",
            dump_format="sqlite3",
            server_version="3.40",
            tables={"images": TableStats(rows=3, content_hash="ab")},
        ),
        members={"database/dhash.sqlite3": MemberDigest(sha256=SHA, size=10)},
        release={"version": "1.2.3"},
    )


def test_manifest_round_trips() -> None:
    manifest = _manifest()
    assert Manifest.from_json(manifest.to_json(), source="x.zip") == manifest


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(format="dhash-backup/2"),
        lambda d: d.pop("env"),
        lambda d: d.update(env=3),
        lambda d: d["members"]["database/dhash.sqlite3"].update(sha256="XYZ"),
        lambda d: d["members"]["database/dhash.sqlite3"].update(size=True),
        lambda d: d["database"]["tables"]["images"].update(rows=-1),
        lambda d: d.update(members=[]),
    ],
)
def test_malformed_manifest_is_an_integrity_error_naming_the_file(mutate: object) -> None:
    data = json.loads(_manifest().to_json())
    mutate(data)  # type: ignore[operator]
    with pytest.raises(IntegrityError, match=r"x\.zip"):
        Manifest.from_json(json.dumps(data).encode(), source="x.zip")


def test_manifest_that_is_not_json_is_refused() -> None:
    with pytest.raises(IntegrityError, match="not JSON"):
        Manifest.from_json(b"\xff{", source="x.zip")


@pytest.mark.parametrize(
    "name", ["../a", "/a", "a/../b", "a//b", "./a", "a\\b", "C:/a", "a/", "", "a\x00b"]
)
def test_unsafe_member_names_are_refused(name: str) -> None:
    with pytest.raises(IntegrityError, match="unsafe member"):
        check_member_name(name, label="x.zip")


@pytest.mark.parametrize(
    "name", ["manifest.json", "database/dhash.pgdump", "config/quality-gates-config.json"]
)
def test_our_member_names_are_safe(name: str) -> None:
    check_member_name(name, label="x.zip")


def test_table_comparison_names_every_difference() -> None:
    want = {"a": TableStats(1, "x"), "b": TableStats(2, "y"), "c": TableStats(3, "z")}
    got = {
        "a": TableStats(1, "x"),
        "b": TableStats(5, "y"),
        "c": TableStats(3, "q"),
        "d": TableStats(0, ""),
    }
    assert compare_tables(want, got) == [
        "table d is unexpected",
        "table b: 5 rows, expected 2",
        "table c: content hash differs",
    ]
    assert compare_tables(want, got, content=False) == [
        "table d is unexpected",
        "table b: 5 rows, expected 2",
    ]
