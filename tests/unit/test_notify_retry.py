"""Retry policy (backoff, Retry-After, deadline), URL checks and redaction, without I/O."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from dhash_rollout.notify.redaction import redact, register_secrets, secret_forms
from dhash_rollout.notify.retry import (
    DeliveryError,
    DeliveryFailed,
    RetryPolicy,
    parse_retry_after,
    run_with_retries,
)
from dhash_rollout.notify.webhook import check_webhook_url


class FakeTime:
    """A clock that only moves when the retry loop sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def failing(*errors: DeliveryError, then: str = "HTTP 200") -> tuple[list[float], object]:
    calls: list[float] = []
    queue = list(errors)

    def attempt(seconds_left: float) -> str:
        calls.append(seconds_left)
        if queue:
            raise queue.pop(0)
        return then

    return calls, attempt


POLICY = RetryPolicy(max_attempts=4, backoff_initial_seconds=0.5, backoff_max_seconds=4.0)


@pytest.mark.parametrize(
    "header, expected",
    [("3", 3.0), ("0.25", 0.25), ("-5", 0.0), ("soon", None), ("", None), (None, None),
     ("nan", None), ("inf", None)],
)  # fmt: skip
def test_retry_after_seconds_are_parsed(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_http_dates_count_from_now() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0


def test_retryable_failures_back_off_exponentially_until_success() -> None:
    time = FakeTime()
    err = DeliveryError("500", retryable=True)
    calls, attempt = failing(err, err, err)

    value, attempts = run_with_retries(
        attempt,
        POLICY,
        time.now + 60,
        label="t",
        sleep=time.sleep,
        clock=time.clock,  # type: ignore[arg-type]
    )

    assert (value, attempts, len(calls)) == ("HTTP 200", 4, 4)
    for n, slept in enumerate(time.sleeps):
        base = 0.5 * 2**n
        assert base <= slept <= min(4.0, base + 0.5)  # exponential plus jitter, capped


def test_retry_after_is_obeyed_even_above_our_own_cap() -> None:
    time = FakeTime()
    _, attempt = failing(DeliveryError("429", retryable=True, retry_after=7.0))

    run_with_retries(attempt, POLICY, time.now + 60, label="t", sleep=time.sleep, clock=time.clock)  # type: ignore[arg-type]

    assert time.sleeps == [7.0]


def test_attempts_stop_at_the_limit() -> None:
    time = FakeTime()
    _, attempt = failing(*[DeliveryError("503", retryable=True)] * 10)

    with pytest.raises(DeliveryFailed) as failed:
        run_with_retries(
            attempt, POLICY, time.now + 600, label="t", sleep=time.sleep, clock=time.clock
        )  # type: ignore[arg-type]

    assert (failed.value.attempts, failed.value.why) == (4, "gave up after 4 attempts")


def test_a_non_retryable_failure_stops_at_once() -> None:
    time = FakeTime()
    _, attempt = failing(DeliveryError("401", retryable=False))

    with pytest.raises(DeliveryFailed) as failed:
        run_with_retries(
            attempt, POLICY, time.now + 60, label="t", sleep=time.sleep, clock=time.clock
        )  # type: ignore[arg-type]

    assert (failed.value.attempts, time.sleeps) == (1, [])


def test_no_sleep_crosses_the_deadline_and_attempts_get_only_the_time_left() -> None:
    time = FakeTime()
    calls, attempt = failing(
        DeliveryError("429", retryable=True, retry_after=2.0),
        DeliveryError("429", retryable=True, retry_after=30.0),
    )

    with pytest.raises(DeliveryFailed) as failed:
        run_with_retries(
            attempt, POLICY, time.now + 10, label="t", sleep=time.sleep, clock=time.clock
        )  # type: ignore[arg-type]

    assert time.sleeps == [2.0]
    assert calls == [10.0, 8.0]
    assert "Retry-After 30s does not fit" in failed.value.why


@pytest.mark.parametrize(
    "url, ok",
    [
        ("https://hooks.slack.com/services/T/B/x", True),
        ("http://127.0.0.1:8080/hook", True),
        ("http://localhost/hook", True),
        ("http://[::1]:9/hook", True),
        ("http://hooks.example.com/x", False),
        ("ftp://example.com/x", False),
        ("not a url", False),
    ],
)
def test_webhooks_need_https_except_on_loopback(url: str, ok: bool) -> None:
    assert (check_webhook_url(url) is None) is ok


def test_secret_forms_cover_the_pieces_a_library_prints() -> None:
    url = "https://prod.logic.example/workflows/abc/triggers?api-version=2016-06-01&sig=S1gNaTuReS3cr3tV4lue"
    forms = secret_forms(url)
    assert url in forms
    assert "S1gNaTuReS3cr3tV4lue" in forms
    assert "2016-06-01" not in forms  # short values would redact harmless text


def test_registered_secrets_are_redacted_in_text_and_in_httpx_log_records() -> None:
    token = "T0kenForRedactionTest9"
    register_secrets([f"http://127.0.0.1:1/relay/{token}"])
    assert token not in redact(f"POST http://127.0.0.1:1/relay/{token} failed; token {token}")

    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, "HTTP Request: %s %s", ("POST", f"/relay/{token}"), None
    )
    for log_filter in logging.getLogger("httpx").filters:
        assert isinstance(log_filter, logging.Filter)
        log_filter.filter(record)
    assert token not in record.getMessage()
