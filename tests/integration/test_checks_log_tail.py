import json
from pathlib import Path

from dhash_rollout.checks.log_lines import validate_lines
from dhash_rollout.checks.logging_check import LogTail


def _line(request_id: str, **extra: object) -> str:
    record = {"timestamp": "t", "level": "info", "event": "request", "request_id": request_id}
    return json.dumps({**record, "status": 200, **extra}) + "\n"


def test_tail_reads_only_whole_lines_appended_after_it_started(tmp_path: Path) -> None:
    log = tmp_path / "blue.log"
    log.write_text("not json from before\n")
    (tmp_path / "supervisord.log").write_text("")
    tail = LogTail(tmp_path)
    with log.open("a") as out:
        out.write(_line("a"))
        out.write('{"partial": ')  # a line still being written
    (tmp_path / "supervisord.log").write_text("2024-01-01 INFO spawned: 'blue'\n")
    (tmp_path / "green.log").write_text(_line("b"))  # a process started meanwhile
    lines = tail.new_lines()
    assert [json.loads(x)["request_id"] for x in lines] == ["a", "b"]
    with log.open("a") as out:
        out.write('"done"}\n')
    # Each read covers everything since the start, now including the completed line.
    assert tail.new_lines()[:2] == [lines[0], '{"partial": "done"}']


def test_a_leaked_token_in_new_lines_is_caught(tmp_path: Path) -> None:
    log = tmp_path / "blue.log"
    log.write_text("")
    tail = LogTail(tmp_path)
    log.write_text(_line("a") + _line("b", authorization="Bearer s3cr3t-t0ken-value"))
    result = validate_lines(tail.new_lines(), ["s3cr3t-t0ken-value"])
    assert [str(p) for p in result.problems] == [
        "line 2: a known secret appears in clear (18 chars, starts 's3cr'…)"
    ]


def test_a_truncated_file_is_read_from_the_start(tmp_path: Path) -> None:
    log = tmp_path / "blue.log"
    log.write_text(_line("old") * 10)
    tail = LogTail(tmp_path)
    log.write_text(_line("new"))  # rotated by copy-truncate
    assert [json.loads(x)["request_id"] for x in tail.new_lines()] == ["new"]
