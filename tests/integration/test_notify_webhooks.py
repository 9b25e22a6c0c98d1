"""Notifications against real webhook receivers on 127.0.0.1: shapes, retries, outbox, dedupe."""

from __future__ import annotations

import io
import json
import logging
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest

from dhash_rollout.notify import Event, Notifier, Severity, Status, notifier_from_settings
from dhash_rollout.notify.retry import RetryPolicy
from dhash_rollout.notify.slack import SlackChannel
from dhash_rollout.notify.store import STORE_FILE
from dhash_service.logs import configure_logging
from tests.integration.test_notify_receivers import Reply, WebhookReceiver, webhook_receiver

CANARY = "cAnArY5ecret7f3a9b21d4e8"
_NOTIFY_VARS = (
    "SLACK_WEBHOOK_URL",
    "TEAMS_WEBHOOK_URL",
    "DISCORD_WEBHOOK_URL",
    "SMTP_HOST",
    "SMTP_PASSWORD",
    "SMTP_USER",
    "SMTP_TO",
    "SMTP_FROM",
)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, receiver: WebhookReceiver, tmp_path: Path) -> Path:
    """Webhook URLs with a canary secret in them, fast retries; returns the log dir."""
    monkeypatch.chdir(tmp_path)
    for name in _NOTIFY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.url("slack", f"services/T0/B0/{CANARY}"))
    monkeypatch.setenv("TEAMS_WEBHOOK_URL", receiver.url("teams", f"workflows/x?sig={CANARY}"))
    monkeypatch.setenv("DISCORD_WEBHOOK_URL", receiver.url("discord", f"api/webhooks/1/{CANARY}"))
    for name, value in {
        "MAX_ATTEMPTS": "3",
        "BACKOFF_INITIAL_SECONDS": "0.01",
        "BACKOFF_MAX_SECONDS": "0.05",
        "CONNECT_TIMEOUT_SECONDS": "0.5",
        "READ_TIMEOUT_SECONDS": "0.3",
        "TOTAL_SECONDS": "5",
    }.items():
        monkeypatch.setenv(f"DHASH_NOTIFY_{name}", value)
    return tmp_path / "logs"


def notifier(log_dir: Path, *channels: str) -> Notifier:
    return notifier_from_settings("production", channels=list(channels), log_dir=log_dir)


def event(message: str = "Deployment of v1.2.3 started", **extra: Any) -> Event:
    values: dict[str, Any] = {"version": "v1.2.3", "initiator": "alice", "phase": "start"}
    values.update(extra)
    return Event(kind="deploy", env="production", message=message, **values)


def log_lines(log_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted(log_dir.glob("notifications_*.log"))
        for line in path.read_text().splitlines()
    ]


def test_each_webhook_gets_one_valid_vendor_payload_and_the_log_records_all(
    env: Path, receiver: WebhookReceiver
) -> None:
    report = notifier(env, "slack", "teams", "discord", "file").send(event())

    assert {o.channel: o.status for o in report.outcomes} == {
        "slack": Status.SENT,
        "teams": Status.SENT,
        "discord": Status.SENT,
        "file": Status.SENT,
    }
    for vendor in ("slack", "teams", "discord"):
        assert len(receiver.accepted(vendor)) == 1, receiver.requests(vendor)
    slack = receiver.accepted("slack")[0]
    fields = slack["attachments"][0]["blocks"][2]["fields"]
    assert {"*Environment*\nproduction", "*Version*\nv1.2.3", "*Initiator*\nalice"} <= {
        f["text"] for f in fields
    }
    lines = log_lines(env)
    assert {(line["channel"], line["status"]) for line in lines} == {
        ("slack", "sent"),
        ("teams", "sent"),
        ("discord", "sent"),
        ("file", "sent"),
    }
    assert all(line["notification"]["message"] == "Deployment of v1.2.3 started" for line in lines)
    assert report.log_file is not None and report.log_file.name.startswith("notifications_")


def test_server_errors_are_retried_until_one_succeeds(env: Path, receiver: WebhookReceiver) -> None:
    receiver.script("slack", Reply(500), Reply(503))

    outcome = notifier(env, "slack").send(event()).outcome("slack")

    assert (outcome.status, outcome.attempts) == (Status.SENT, 3)
    assert [r.status for r in receiver.requests("slack")] == [500, 503, 200]


def test_retry_after_of_a_429_is_waited_for(env: Path, receiver: WebhookReceiver) -> None:
    receiver.script("discord", Reply(429, {"Retry-After": "1"}, body='{"retry_after": 1}'))

    outcome = notifier(env, "discord").send(event()).outcome("discord")

    assert outcome.status == Status.SENT
    first, second = receiver.requests("discord")
    assert second.at - first.at >= 1.0


def test_retry_after_as_an_http_date_is_waited_for(env: Path, receiver: WebhookReceiver) -> None:
    when = formatdate(time.time() + 2, usegmt=True)  # whole seconds: 1 to 2 s from now
    receiver.script("slack", Reply(429, {"Retry-After": when}))

    outcome = notifier(env, "slack").send(event()).outcome("slack")

    assert (outcome.status, outcome.attempts) == (Status.SENT, 2)
    first, second = receiver.requests("slack")
    assert second.at - first.at >= 0.9  # not the 0.01-0.05 s backoff


def test_concurrent_flushes_of_one_outbox_post_each_message_once(
    env: Path, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHASH_NOTIFY_MAX_ATTEMPTS", "1")
    receiver.script("slack", *[Reply(503)] * 3)
    for n in range(3):
        notifier(env, "slack").send(event(f"message {n}"))
    assert len(notifier(env, "slack").outbox()) == 3
    receiver.script("slack", *[Reply(200, body="ok", delay=0.15)] * 6)  # slow enough to overlap
    flushers = [notifier(env, "slack") for _ in range(3)]
    reports: list[Any] = []
    start = threading.Barrier(len(flushers))

    def flush(sender: Notifier) -> None:
        start.wait()
        reports.append(sender.flush())

    threads = [threading.Thread(target=flush, args=(f,)) for f in flushers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)

    sent = [i.key for r in reports for i in r.items if i.outcome.status == Status.SENT]
    assert len(sent) == len(set(sent)) == 3
    messages = [body["text"].rsplit(": ", 1)[1] for body in receiver.accepted("slack")]
    assert sorted(messages) == ["message 0", "message 1", "message 2"]
    assert notifier(env, "slack").outbox() == []


def test_a_retry_after_longer_than_the_budget_outboxes_without_waiting(
    env: Path, receiver: WebhookReceiver
) -> None:
    receiver.script("slack", Reply(429, {"Retry-After": "120"}))

    started = time.monotonic()
    outcome = notifier(env, "slack").send(event()).outcome("slack")

    assert outcome.status == Status.OUTBOXED
    assert outcome.error and "Retry-After 120s" in outcome.error
    assert len(receiver.requests("slack")) == 1
    assert time.monotonic() - started < 5  # the budget; it did not sleep 120 s


def test_a_slow_endpoint_times_out_on_read_is_retried_then_outboxed(
    env: Path, receiver: WebhookReceiver
) -> None:
    receiver.script("teams", *[Reply(202, delay=1.0)] * 3)

    outcome = notifier(env, "teams").send(event()).outcome("teams")

    assert (outcome.status, outcome.attempts) == (Status.OUTBOXED, 3)
    assert outcome.error and "read timed out" in outcome.error


def test_client_errors_are_not_retried(env: Path, receiver: WebhookReceiver) -> None:
    receiver.script("slack", Reply(404, body="no_service"))

    outcome = notifier(env, "slack").send(event()).outcome("slack")

    assert (outcome.status, outcome.attempts) == (Status.OUTBOXED, 1)
    assert outcome.error and "404" in outcome.error and "no_service" in outcome.error


def test_an_unreachable_endpoint_is_outboxed(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{closed_port}/slack/{CANARY}")

    outcome = notifier(env, "slack").send(event()).outcome("slack")

    assert (outcome.status, outcome.attempts) == (Status.OUTBOXED, 3)
    assert outcome.error and "ConnectError" in outcome.error


def test_a_connect_that_never_completes_times_out_is_retried_then_outboxed(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(0)  # never accepts: once its backlog is full, new SYNs are dropped
        port = server.getsockname()[1]
        fillers = [socket.socket() for _ in range(3)]
        for filler in fillers:
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
        monkeypatch.setenv("SLACK_WEBHOOK_URL", f"http://127.0.0.1:{port}/slack/{CANARY}")
        monkeypatch.setenv("DHASH_NOTIFY_CONNECT_TIMEOUT_SECONDS", "0.2")
        try:
            started = time.monotonic()
            outcome = notifier(env, "slack").send(event()).outcome("slack")
            elapsed = time.monotonic() - started
        finally:
            for filler in fillers:
                filler.close()

    assert (outcome.status, outcome.attempts) == (Status.OUTBOXED, 3)
    assert outcome.error and "connect timed out" in outcome.error
    assert elapsed < 2.5, elapsed  # 3 x 0.2 s connect timeout plus backoff, not 5 s


def test_an_outboxed_message_is_flushed_once_the_endpoint_recovers(
    env: Path, receiver: WebhookReceiver
) -> None:
    receiver.script("discord", *[Reply(500)] * 3)
    first = notifier(env, "discord", "file").send(event())
    assert first.outcome("discord").status == Status.OUTBOXED
    assert first.outcome("file").status == Status.SENT  # the message is on disk regardless
    outboxed = [line for line in log_lines(env) if line["status"] == "outboxed"]
    assert [line["channel"] for line in outboxed] == ["discord"]

    flushed = notifier(env, "discord").flush()

    assert [(i.key, i.outcome.status) for i in flushed.items] == [(first.key, Status.SENT)]
    assert flushed.remaining == 0
    assert len(receiver.accepted("discord")) == 1
    assert notifier(env, "discord").flush().items == ()  # nothing left, nothing re-sent
    assert len(receiver.accepted("discord")) == 1


def test_a_flush_tries_a_dead_channel_once_not_once_per_message(
    env: Path, receiver: WebhookReceiver
) -> None:
    receiver.script("slack", *[Reply(500)] * 12)
    sender = notifier(env, "slack")
    for n in range(3):
        assert sender.send(event(f"message {n}")).outcome("slack").status == Status.OUTBOXED
    before = len(receiver.requests("slack"))

    flushed = sender.flush()

    assert [i.outcome.status for i in flushed.items] == [Status.OUTBOXED] * 3
    assert len(receiver.requests("slack")) - before == 3  # one retry cycle, for the first only
    assert flushed.remaining == 3


def test_running_the_same_notification_again_does_not_post_twice(
    env: Path, receiver: WebhookReceiver
) -> None:
    sender = notifier(env, "slack", "file")
    assert sender.send(event()).outcome("slack").status == Status.SENT

    again = notifier(env, "slack", "file").send(event())

    assert again.outcome("slack").status == Status.DUPLICATE
    assert again.outcome("file").status == Status.DUPLICATE
    assert len(receiver.accepted("slack")) == 1
    assert sender.send(event(key="deploy-42-start")).outcome("slack").status == Status.SENT
    assert len(receiver.accepted("slack")) == 2


def test_running_it_again_delivers_what_was_outboxed(env: Path, receiver: WebhookReceiver) -> None:
    receiver.script("slack", *[Reply(503)] * 3)
    assert notifier(env, "slack").send(event()).outcome("slack").status == Status.OUTBOXED

    again = notifier(env, "slack").send(event()).outcome("slack")

    assert again.status == Status.SENT
    assert len(receiver.accepted("slack")) == 1
    assert notifier(env, "slack").outbox() == []


def test_concurrent_runs_of_one_notification_post_once(
    env: Path, receiver: WebhookReceiver
) -> None:
    receiver.script("slack", Reply(200, body="ok", delay=0.2))  # under the 0.3 s read timeout
    senders = [notifier(env, "slack") for _ in range(4)]
    statuses: list[Status] = []
    start = threading.Barrier(len(senders))

    def run(sender: Notifier) -> None:
        start.wait()
        statuses.append(sender.send(event()).outcome("slack").status)

    threads = [threading.Thread(target=run, args=(s,)) for s in senders]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)

    assert sorted(statuses) == sorted([Status.SENT] + [Status.DUPLICATE] * 3)
    assert len(receiver.requests("slack")) == 1


def test_a_hanging_endpoint_costs_at_most_the_budget(
    env: Path, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHASH_NOTIFY_TOTAL_SECONDS", "1")
    monkeypatch.setenv("DHASH_NOTIFY_READ_TIMEOUT_SECONDS", "10")
    receiver.script("slack", *[Reply(200, delay=3.0)] * 3)

    started = time.monotonic()
    report = notifier(env, "slack", "file").send(event())
    elapsed = time.monotonic() - started

    assert report.outcome("slack").status == Status.OUTBOXED
    assert report.outcome("file").status == Status.SENT
    assert elapsed < 2.5, elapsed  # budget 1 s plus scheduling, not the 10 s read timeout


def test_a_flush_against_a_trickling_endpoint_returns_at_its_budget(
    env: Path, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.script("slack", Reply(500))
    monkeypatch.setenv("DHASH_NOTIFY_MAX_ATTEMPTS", "1")
    assert notifier(env, "slack").send(event()).outcome("slack").status == Status.OUTBOXED
    receiver.script("slack", Reply(200, trickle=6.0))  # a byte every 0.1 s: no read times out

    started = time.monotonic()
    flushed = notifier(env, "slack").flush(timeout=0.5)
    elapsed = time.monotonic() - started

    assert [i.outcome.status for i in flushed.items] == [Status.PENDING]
    assert elapsed < 2.5, elapsed  # 0.5 s budget + 1 s grace, not the 6 s trickle
    assert [line["status"] for line in log_lines(env) if line["channel"] == "slack"] == [
        "outboxed",
        "pending",
    ]


class _Stuck:
    """A channel that ignores its deadline until released."""

    name = "stuck"

    def __init__(self) -> None:
        self.release = threading.Event()

    def render(self, event: Event) -> dict[str, Any]:
        return {"text": event.message}

    def deliver(self, payload: dict[str, Any], seconds_left: float) -> str:
        self.release.wait(10)
        return "late"

    def secret_values(self) -> tuple[str, ...]:
        return ()


class _Broken(_Stuck):
    name = "broken"

    def deliver(self, payload: dict[str, Any], seconds_left: float) -> str:
        raise RuntimeError("bug in a channel")


def test_send_returns_at_the_budget_even_if_a_channel_ignores_it(tmp_path: Path) -> None:
    stuck = _Stuck()
    sender = Notifier({"stuck": stuck}, log_dir=tmp_path, total_seconds=0.3)

    started = time.monotonic()
    report = sender.send(event())
    elapsed = time.monotonic() - started

    assert report.outcome("stuck").status == Status.PENDING
    assert elapsed < 3.0, elapsed
    stuck.release.set()  # the worker finishes later and records the truth
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with closing(sqlite3.connect(tmp_path / STORE_FILE)) as db:
            rows = db.execute("SELECT status FROM deliveries").fetchall()
        if rows == [("sent",)]:
            break
        time.sleep(0.05)
    assert rows == [("sent",)]


def test_a_crashing_channel_is_reported_and_the_others_still_deliver(
    env: Path, receiver: WebhookReceiver
) -> None:
    slack = SlackChannel(receiver.url("slack", CANARY), RetryPolicy())
    sender = Notifier({"broken": _Broken(), "slack": slack}, log_dir=env)

    report = sender.send(event())

    assert report.outcome("slack").status == Status.SENT
    broken = report.outcome("broken")
    assert broken.status == Status.OUTBOXED
    assert broken.error and "RuntimeError: bug in a channel" in broken.error


def test_channels_skip_events_below_their_minimum_severity(
    env: Path, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHASH_NOTIFY_MIN_SEVERITY_SLACK", "error")
    environments = env.parent / "dhash-environments.toml"
    environments.write_text('[production]\nnotify_min_severity = { discord = "CRITICAL" }\n')
    monkeypatch.setenv("DHASH_ENVIRONMENTS_FILE", str(environments))
    sender = notifier(env, "slack", "teams", "discord")

    info = sender.send(event())
    error = sender.send(event("rolled back", severity=Severity.ERROR, phase="rollback"))

    assert [o.status for o in info.outcomes] == [
        Status.BELOW_MIN_SEVERITY,
        Status.SENT,
        Status.BELOW_MIN_SEVERITY,
    ]
    assert [o.status for o in error.outcomes] == [
        Status.SENT,
        Status.SENT,
        Status.BELOW_MIN_SEVERITY,
    ]
    assert len(receiver.accepted("slack")) == 1


def test_dry_run_renders_every_payload_and_sends_and_writes_nothing(
    env: Path, receiver: WebhookReceiver
) -> None:
    report = notifier(env, "slack", "teams", "discord", "email", "file").send(event(), dry_run=True)

    statuses = {o.channel: o.status for o in report.outcomes}
    assert statuses == {
        "slack": Status.RENDERED,
        "teams": Status.RENDERED,
        "discord": Status.RENDERED,
        "email": Status.NOT_CONFIGURED,
        "file": Status.RENDERED,
    }
    assert all(o.payload for o in report.outcomes)
    assert receiver.received == []
    assert not env.exists()


def test_the_canary_secret_never_reaches_logs_files_or_reports(
    env: Path,
    receiver: WebhookReceiver,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("DEBUG", stream=stream)
        root.addHandler(caplog.handler)
        caplog.set_level(logging.DEBUG)
        receiver.script("slack", Reply(500, body="upstream", echo_path=True))
        receiver.script("teams", *[Reply(401, body="denied", echo_path=True)])
        receiver.script("discord", *[Reply(202, delay=1.0)] * 3)
        sender = notifier(env, "slack", "teams", "discord", "file")
        reports = [sender.send(event()), sender.flush(), sender.send(event(), dry_run=True)]
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])

    assert {o.channel: o.status for o in reports[0].outcomes}["teams"] == Status.OUTBOXED
    assert "HTTP Request: POST" in stream.getvalue()  # httpx did log each request...
    assert "[REDACTED]" in stream.getvalue()  # ...with the URL hidden
    captured = capsys.readouterr()
    places = {
        "structured log": stream.getvalue(),
        "caplog": caplog.text,
        "stdout/stderr": captured.out + captured.err,
        "reports": json.dumps([r.to_dict() for r in reports]),
        "files": "".join(p.read_bytes().decode("latin-1") for p in env.iterdir()),
    }
    leaks = [where for where, text in places.items() if CANARY in text]
    assert leaks == []


def test_a_claim_left_by_a_killed_run_is_flushed_once_it_goes_stale(
    env: Path, receiver: WebhookReceiver
) -> None:
    sender = notifier(env, "slack")
    the_event = event()
    sender.store.claim(the_event.dedupe_key, "slack", the_event.to_dict())  # then "killed"
    assert sender.send(the_event).outcome("slack").status == Status.DUPLICATE  # in flight
    assert sender.flush().items == ()

    with closing(sqlite3.connect(env / STORE_FILE)) as db, db:  # ten minutes later
        db.execute("UPDATE deliveries SET updated_at = updated_at - 600")
    flushed = sender.flush()

    assert [i.outcome.status for i in flushed.items] == [Status.SENT]
    assert len(receiver.accepted("slack")) == 1


def test_the_environment_file_chooses_the_default_channels(
    env: Path, receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    environments = env.parent / "dhash-environments.toml"
    environments.write_text('[production]\nchannels = ["discord", "file"]\n')
    monkeypatch.setenv("DHASH_ENVIRONMENTS_FILE", str(environments))

    report = notifier_from_settings("production", log_dir=env).send(event())

    assert [(o.channel, o.status) for o in report.outcomes] == [
        ("discord", Status.SENT),
        ("file", Status.SENT),
    ]


def test_an_unwritable_log_directory_fails_the_file_channel_only(
    env: Path, receiver: WebhookReceiver
) -> None:
    env.parent.mkdir(parents=True, exist_ok=True)
    env.write_text("not a directory")

    report = notifier(env, "slack", "file").send(event())

    assert report.outcome("slack").status == Status.SENT
    assert report.outcome("file").status == Status.FAILED
    assert len(receiver.accepted("slack")) == 1
