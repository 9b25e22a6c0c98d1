"""The notification event: validation, severity, idempotency key."""

from __future__ import annotations

import pytest

from dhash_rollout.notify import Event, Severity
from dhash_rollout.notify.factory import parse_channels
from dhash_rollout.notify.model import DEFAULT_SEVERITY, MAX_MESSAGE_CHARS
from dhash_service.errors import ConfigError


def make(**values: object) -> Event:
    base: dict[str, object] = {"kind": "deploy", "env": "production", "message": "started"}
    base.update(values)
    return Event(**base)  # type: ignore[arg-type]


def test_severities_order_like_the_guides_alert_levels() -> None:
    assert Severity.INFO < Severity.WARN < Severity.ERROR < Severity.CRITICAL


@pytest.mark.parametrize("text, expected", [("warn", Severity.WARN), ("WARNING", Severity.WARN)])
def test_severity_names_are_case_insensitive_and_accept_warning(
    text: str, expected: Severity
) -> None:
    assert Severity.parse(text) is expected


def test_an_unknown_severity_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="LOUD"):
        Severity.parse("LOUD")


def test_rollbacks_and_failures_default_to_error_and_gates_to_warn() -> None:
    assert DEFAULT_SEVERITY["rollback"] is Severity.ERROR
    assert DEFAULT_SEVERITY["failure"] is Severity.ERROR
    assert DEFAULT_SEVERITY["gate"] is Severity.WARN
    assert DEFAULT_SEVERITY["deploy"] is Severity.INFO


def test_severity_may_be_given_by_name() -> None:
    assert make(severity="error").severity is Severity.ERROR


@pytest.mark.parametrize(
    "kind", ["deploy", "success", "failure", "rollback", "info", "backup", "gate"]
)
def test_every_documented_kind_is_accepted(kind: str) -> None:
    assert make(kind=kind).kind == kind


@pytest.mark.parametrize(
    "values, says",
    [
        ({"kind": "party"}, "unknown notification type"),
        ({"message": "   "}, "non-empty message"),
        ({"env": ""}, "environment"),
        ({"fields": {"": "x"}}, "field"),
    ],
)
def test_invalid_events_are_refused(values: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        make(**values)


@pytest.mark.parametrize("breaker", ["\r", "\n", "\r\n", "\x85", "\u2028", "\x0b"])
@pytest.mark.parametrize("name", ["subject", "version", "env", "initiator", "key"])
def test_line_breaks_in_header_bound_values_are_refused(name: str, breaker: str) -> None:
    with pytest.raises(ConfigError, match="CR/LF"):
        make(**{name: f"ok{breaker}Bcc: attacker@example.net"})


def test_an_overlong_message_is_cut_not_refused() -> None:
    event = make(message="x" * (MAX_MESSAGE_CHARS + 50))
    assert len(event.message) == MAX_MESSAGE_CHARS
    assert event.message.endswith("…")


def test_the_message_and_reason_may_span_lines() -> None:
    event = make(message="line one\nline two", reason="first\nsecond")
    assert event.message.count("\n") == 1


def test_the_default_key_is_stable_and_follows_the_content() -> None:
    assert make().dedupe_key == make().dedupe_key
    assert make().dedupe_key.startswith("evt-")
    assert make().dedupe_key != make(message="finished").dedupe_key
    assert make().dedupe_key != make(env="staging").dedupe_key
    assert make(key="run-7:start").dedupe_key == "run-7:start"


def test_the_run_id_and_phase_name_the_occurrence_not_the_text() -> None:
    first = make(run_id="rollback-20261202T031500Z-aa01", phase="rollback")
    second = make(run_id="rollback-20261202T151000Z-bb02", phase="rollback")
    assert first.message == second.message
    assert first.dedupe_key == "rollback-20261202T031500Z-aa01:rollback"
    assert first.dedupe_key != second.dedupe_key
    assert make(run_id="r1").dedupe_key == "r1:deploy"  # no phase: the kind
    assert make(run_id="r1", key="explicit").dedupe_key == "explicit"
    assert make(run_id="r1").dedupe_key != make(run_id="r1", phase="success").dedupe_key


def test_a_content_key_stays_what_older_versions_stored() -> None:
    # Outbox rows written before run ids existed must be found under the same key.
    assert make().dedupe_key == make(run_id=None).dedupe_key
    stored = make().to_dict()
    stored.pop("run_id")
    assert Event.from_dict(stored).dedupe_key == make().dedupe_key


def test_an_event_survives_the_outbox_round_trip() -> None:
    event = make(severity=Severity.CRITICAL, fields={"p95": "812 ms"}, version="v1", reason="r")
    again = Event.from_dict(event.to_dict())
    assert again == event
    assert again.dedupe_key == event.dedupe_key


def test_channel_lists_are_parsed_deduplicated_and_checked() -> None:
    assert parse_channels("slack, Teams,email,slack") == ["slack", "teams", "email"]
    with pytest.raises(ConfigError, match="sms"):
        parse_channels("slack,sms")
    with pytest.raises(ConfigError):
        parse_channels(" , ")
