import json

from dhash_rollout.checks.log_lines import check_line, level_problem, validate_lines

TOKEN = "tok-3f9a0c7d2b"


def _line(**fields: object) -> str:
    base: dict[str, object] = {
        "timestamp": "2025-01-01T00:00:00Z",
        "level": "info",
        "event": "request",
        "request_id": "r-1",
        "method": "GET",
        "path": "/health",
        "status": 200,
    }
    base.update(fields)
    return json.dumps({k: v for k, v in base.items() if v is not None})


def test_a_complete_access_line_is_valid() -> None:
    record, problems = check_line(_line(), [TOKEN])
    assert problems == []
    assert record is not None and record["request_id"] == "r-1"


def test_access_line_without_request_id_is_reported() -> None:
    _, problems = check_line(_line(request_id=None))
    assert problems == ["access line without a request id"]


def test_non_access_line_needs_no_request_id() -> None:
    _, problems = check_line(_line(request_id=None, status=None, event="index synced"))
    assert problems == []


def test_unknown_level_is_reported() -> None:
    _, problems = check_line(_line(level="loud"))
    assert problems == ["unknown level 'loud'"]


def test_server_error_logged_as_info_is_reported() -> None:
    _, problems = check_line(_line(status=503))
    assert problems == ["status 503 logged at info, expected error"]


def test_success_logged_as_error_is_reported_and_client_errors_may_warn() -> None:
    assert level_problem("error", 200) == "status 200 logged at error, expected info"
    assert level_problem("warning", 404) is None
    assert level_problem("info", 401) is None


def test_known_secret_in_clear_is_reported_without_repeating_it() -> None:
    _, problems = check_line(_line(note=f"auth with {TOKEN}"), [TOKEN])
    assert len(problems) == 1
    assert "known secret" in problems[0]
    assert TOKEN not in problems[0]


def test_secret_shaped_values_are_reported_even_when_unknown() -> None:
    slack = "https://hooks.slack.com/services/T000/B000/XXXXXXXX"
    _, problems = check_line(_line(target=slack))
    assert problems == [
        "a secret-shaped value (webhook URL, bearer token or URL password) is not redacted"
    ]
    _, problems = check_line(_line(header="Bearer abc.def"))
    assert len(problems) == 1


def test_redacted_values_are_fine() -> None:
    _, problems = check_line(_line(header="Bearer [REDACTED]", token="[REDACTED]"), [TOKEN])
    assert problems == []


def test_text_lines_and_missing_fields_are_reported() -> None:
    _, problems = check_line("INFO: Started server process")
    assert problems == ["not valid JSON"]
    _, problems = check_line(json.dumps({"level": "info"}))
    assert problems == ["missing timestamp, event"]
    _, problems = check_line("[1, 2]")
    assert problems == ["not a JSON object"]


def test_validate_lines_collects_ids_levels_and_numbered_problems() -> None:
    lines = [_line(request_id="a"), "", _line(request_id="b", status=404, level="warning"), "oops"]
    result = validate_lines(lines)
    assert result.lines_checked == 3
    assert result.seen_request_ids == {"a", "b"}
    assert result.levels == {"info": 1, "warning": 1}
    assert [str(p) for p in result.problems] == ["line 4: not valid JSON"]
    assert result.missing(["a", "b", "c"]) == ["c"]
