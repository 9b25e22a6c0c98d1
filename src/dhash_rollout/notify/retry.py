"""Bounded retries: exponential backoff with jitter, ``Retry-After`` honoured, one deadline.

A channel's attempt raises :class:`DeliveryError` saying whether a retry can help (timeouts,
429, 5xx) or not (400, 401, bad TLS certificate). Retries stop at the attempt limit or when the
next sleep would cross the shared deadline, whichever comes first, so a notification can delay
a deploy by at most the configured budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

from dhash_service.logs import get_logger

T = TypeVar("T")

_log = get_logger("dhash.notify")

# An attempt with less time than this left is not worth starting.
MIN_ATTEMPT_SECONDS = 0.05


class DeliveryError(Exception):
    """One failed attempt. The message is already redacted and safe to log or show."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status


class DeliveryFailed(Exception):
    """Every allowed attempt failed; ``error`` is the last one."""

    def __init__(self, error: DeliveryError, attempts: int, why: str) -> None:
        super().__init__(f"{error.message} ({why})")
        self.error = error
        self.attempts = attempts
        self.why = why


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one channel. ``backoff_max_seconds`` caps our own sleeps only: a
    server's ``Retry-After`` is obeyed as given, or the message is outboxed if it does not fit
    the deadline."""

    max_attempts: int = 4
    backoff_initial_seconds: float = 0.5
    backoff_max_seconds: float = 8.0
    connect_timeout_seconds: float = 5.0
    read_timeout_seconds: float = 10.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class _StopBeforeDeadline(stop_base):
    """Stop when the coming sleep would leave no time for another attempt."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self.deadline = deadline
        self.clock = clock

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() + retry_state.upcoming_sleep + MIN_ATTEMPT_SECONDS > self.deadline


def run_with_retries(
    attempt: Callable[[float], T],
    policy: RetryPolicy,
    deadline: float,
    *,
    label: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[T, int]:
    """Call ``attempt(seconds_left)`` until it succeeds; return its value and the attempt count.

    Raises :class:`DeliveryFailed` when attempts, time or a non-retryable error end the tries.
    """
    calls = 0
    backoff = wait_exponential_jitter(
        multiplier=policy.backoff_initial_seconds,
        max=policy.backoff_max_seconds,
        jitter=policy.backoff_initial_seconds,
    )

    def wait(state: RetryCallState) -> float:
        delay = float(backoff(state))
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, DeliveryError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay

    def log_retry(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        _log.warning(
            "notify.retry",
            channel=label,
            attempt=state.attempt_number,
            sleep_seconds=round(state.upcoming_sleep, 3),
            error=getattr(error, "message", type(error).__name__),
        )

    def one_attempt() -> T:
        nonlocal calls
        left = deadline - clock()
        if left < MIN_ATTEMPT_SECONDS:
            raise DeliveryError("no time left in the notification budget", retryable=False)
        calls += 1
        return attempt(left)

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, DeliveryError) and e.retryable),
        stop=stop_after_attempt(policy.max_attempts) | _StopBeforeDeadline(deadline, clock),
        wait=wait,
        sleep=sleep,
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        value = retrying(one_attempt)
    except DeliveryError as error:
        raise DeliveryFailed(error, calls, _why(error, calls, policy)) from None
    return value, calls


def _why(error: DeliveryError, calls: int, policy: RetryPolicy) -> str:
    if not error.retryable:
        return "not retryable" if calls else "no time left"
    if calls >= policy.max_attempts:
        return f"gave up after {calls} attempts"
    if error.retry_after is not None:
        return f"Retry-After {error.retry_after:g}s does not fit the time budget"
    return "time budget exhausted"
