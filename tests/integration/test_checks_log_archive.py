import gzip
import os
from pathlib import Path

from dhash_rollout.checks.log_archive import archive_file, open_paths, scan


def test_archive_keeps_content_and_mtime_and_removes_the_original(tmp_path: Path) -> None:
    log = tmp_path / "deploy_production_20240101_120000.log"
    body = b'{"event": "deploy"}\n' * 5000
    log.write_bytes(body)
    os.utime(log, (1_700_000_000, 1_700_000_000))
    target = archive_file(log)
    assert not log.exists()
    assert target == tmp_path / "archive" / f"{log.name}.gz"
    assert gzip.decompress(target.read_bytes()) == body
    assert target.stat().st_mtime == 1_700_000_000
    assert [p.name for p in (tmp_path / "archive").iterdir()] == [target.name]


def test_a_second_archive_of_the_same_name_does_not_overwrite_the_first(tmp_path: Path) -> None:
    log = tmp_path / "service.log.1"
    log.write_text("first\n")
    first = archive_file(log)
    log.write_text("second\n")
    second = archive_file(log)
    assert first != second
    assert gzip.decompress(first.read_bytes()) == b"first\n"
    assert gzip.decompress(second.read_bytes()) == b"second\n"


def test_scan_lists_files_but_not_the_archive_directory(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("x")
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "b.log.gz").write_text("y")
    assert [f.path.name for f in scan(tmp_path)] == ["a.log"]
    assert scan(tmp_path / "missing") == []


def test_files_held_open_by_a_process_are_seen(tmp_path: Path) -> None:
    held = tmp_path / "blue.log"
    with held.open("a"):
        assert held.resolve() in {p.resolve() for p in open_paths()}
    assert held.resolve() not in {p.resolve() for p in open_paths()}
