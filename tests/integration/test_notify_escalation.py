"""Escalation against real receivers on 127.0.0.1 (webhooks and aiosmtpd), on a fake clock.

The matrix under test is the guide's: L1 (a Slack mention) at once, L2 (a Teams webhook and the
ops manager's mail) after 15 minutes, L3 (a Discord webhook and the director's mail) after 30.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any, cast

import pytest

from dhash_rollout.cli import main
from dhash_rollout.environments import load_environment
from dhash_rollout.notify import Event, Notifier, Severity, Status, notifier_from_settings
from dhash_rollout.notify.escalator import Escalator
from dhash_rollout.notify.factory import build_escalator
from dhash_rollout.notify.store import STORE_FILE, Claim, DeliveryStore
from dhash_rollout.runs.context import RunContext
from dhash_rollout.runs.journal import Journal
from dhash_rollout.runs.notices import notify
from dhash_rollout.runs.runlog import open_run_log
from dhash_rollout.targets import Target
from tests.integration.test_notify_receivers import (
    Reply,
    SmtpServer,
    WebhookReceiver,
    smtp_server,
    webhook_receiver,
)

DHASH = Path(sys.executable).parent / "dhash"
MIN = 60.0
OPS = "ops-manager@example.org"
DIRECTOR = "eng-director@example.org"
# Who the whole matrix reaches: L1's mention, L2's webhook and mail, L3's webhook and mail.
EVERY_LEVEL = [
    "slack:oncall",
    "teams:l2-senior",
    f"mail:{OPS}",
    "discord:l3-director",
    f"mail:{DIRECTOR}",
]
_NOTIFY_VARS = ("SLACK_", "TEAMS_", "DISCORD_", "SMTP_", "DHASH_")


class FakeClock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, minutes: float) -> float:
        self.now += minutes * MIN
        return self.now


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


def _matrix(receiver: WebhookReceiver) -> str:
    return f"""
[production]
channels = ["file"]

[production.escalation]
severities = ["ERROR", "CRITICAL"]

[[production.escalation.levels]]
name = "L1"
after_minutes = 0
contacts = [{{ channel = "slack", to = "<@U0ONCALL>" }}]

[[production.escalation.levels]]
name = "L2"
after_minutes = 15
contacts = [
  {{ channel = "teams", webhook_url = "{receiver.url("teams", "l2-senior")}" }},
  {{ channel = "email", to = ["{OPS}"] }},
]

[[production.escalation.levels]]
name = "L3"
after_minutes = 30
contacts = [
  {{ channel = "discord", webhook_url = "{receiver.url("discord", "l3-director")}" }},
  {{ channel = "email", to = ["{DIRECTOR}"] }},
]
"""


def notify_env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    receiver: WebhookReceiver,
    smtp: SmtpServer,
    **extra: str,
) -> dict[str, str]:
    """The environment (also for child processes): the matrix, the receivers, fast retries;
    ``extra`` adds or overrides variables (the ack-link tests' secret and listener)."""
    for name in list(os.environ):
        if name.startswith(_NOTIFY_VARS):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dhash-environments.toml").write_text(_matrix(receiver))
    values = {
        "DHASH_ENVIRONMENTS_FILE": str(tmp_path / "dhash-environments.toml"),
        "DHASH_LOG_DIR": str(tmp_path / "logs"),
        "SLACK_WEBHOOK_URL": receiver.url("slack", "T0/B0/oncall"),
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp.port),
        "SMTP_SECURITY": "none",
        "SMTP_FROM": "dhash <dhash@example.org>",
        "SMTP_TO": "everyone@example.org",
        "DHASH_NOTIFY_MAX_ATTEMPTS": "2",
        "DHASH_NOTIFY_BACKOFF_INITIAL_SECONDS": "0.01",
        "DHASH_NOTIFY_BACKOFF_MAX_SECONDS": "0.02",
        "DHASH_NOTIFY_READ_TIMEOUT_SECONDS": "2",
        "DHASH_NOTIFY_TOTAL_SECONDS": "5",
        **extra,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, receiver: WebhookReceiver, smtp: SmtpServer
) -> dict[str, str]:
    return notify_env(monkeypatch, tmp_path, receiver, smtp)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


@pytest.fixture
def notifier(settings: dict[str, str], clock: FakeClock) -> Notifier:
    sender = notifier_from_settings("production", channels=["file"], strict=True)
    assert isinstance(sender.escalation, Escalator)
    sender.escalation.clock = clock
    return sender


def escalator_of(notifier: Notifier) -> Escalator:
    assert isinstance(notifier.escalation, Escalator)
    return notifier.escalation


def rollback(run_id: str = "deploy-20261202T030000Z-aa01", **extra: Any) -> Event:
    values: dict[str, Any] = {
        "kind": "rollback",
        "env": "production",
        "message": "p95 over budget for 10 minutes: rolling back to 1.2.2",
        "severity": Severity.ERROR,
        "version": "1.2.2",
        "phase": "rollback",
        "run_id": run_id,
    }
    values.update(extra)
    return Event(**values)


def who_got_what(receiver: WebhookReceiver, smtp: SmtpServer) -> list[tuple[str, str]]:
    """(recipient, first line of what they got), in arrival order per kind of receiver."""
    got = [
        (f"{r.vendor}:{r.path.rsplit('/', 1)[-1]}", _first_text(r.vendor, r.body))
        for r in receiver.received
        if 200 <= r.status < 300
    ]
    got += [(f"mail:{','.join(m.rcpt_tos)}", str(m.message["Subject"])) for m in smtp.mails]
    return got


def recipients(receiver: WebhookReceiver, smtp: SmtpServer) -> list[str]:
    return [who for who, _ in who_got_what(receiver, smtp)]


def _first_text(vendor: str, body: Any) -> str:
    if vendor == "slack":
        return str(body["text"])
    if vendor == "teams":
        return str(body["attachments"][0]["content"]["body"][0]["text"])
    return str(body["embeds"][0]["title"])


def test_an_unacknowledged_error_pages_l1_at_once_then_l2_at_15_and_l3_at_30_minutes(
    notifier: Notifier, clock: FakeClock, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    report = notifier.send(rollback())
    alert_id = report.event.fields["Alert"]
    escalator = escalator_of(notifier)

    assert f"dhash notify ack {alert_id}" in report.event.message
    assert report.event.fields["Acknowledge"] == f"dhash notify ack {alert_id}"
    assert recipients(receiver, smtp) == ["slack:oncall"]  # L1, paged by the send itself
    (l1,) = receiver.accepted("slack")
    assert l1["text"].startswith("<@U0ONCALL> ")  # the mention really pings
    assert f"Acknowledge: dhash notify ack {alert_id}" in json.dumps(l1)

    clock.advance(14)
    assert escalator.escalate_due().sent == ()
    clock.advance(1)  # 15 minutes
    assert [s.label for s in escalator.escalate_due().sent] == ["L2"]
    assert sorted(recipients(receiver, smtp)) == sorted(
        ["slack:oncall", "teams:l2-senior", f"mail:{OPS}"]
    )
    (ops_mail,) = smtp.mails
    assert ops_mail.message["Subject"].startswith("[dhash] [L2] [ERROR] production: Rollback")
    assert f"dhash notify ack {alert_id}" in ops_mail.message.get_content()

    clock.advance(14)
    assert escalator.escalate_due().sent == ()
    clock.advance(1)  # 30 minutes
    assert [s.label for s in escalator.escalate_due().sent] == ["L3"]
    clock.advance(60)
    assert escalator.escalate_due().sent == ()
    assert sorted(recipients(receiver, smtp)) == sorted(EVERY_LEVEL)
    (status,) = escalator.status()
    assert (status.alert.id, status.level, status.next_level) == (alert_id, "L3", None)


def test_an_ack_at_20_minutes_stops_l3_and_is_announced_once_to_the_levels_paged(
    notifier: Notifier, clock: FakeClock, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    alert_id = notifier.send(rollback()).event.fields["Alert"]
    escalator = escalator_of(notifier)
    clock.advance(15)
    escalator.escalate_due()
    paged_items = who_got_what(receiver, smtp)

    clock.advance(5)  # 20 minutes
    _, changed, run = escalator.ack(alert_id, "alice")
    again, changed_again, run_again = escalator.ack(alert_id, "bob")
    clock.advance(40)
    later = escalator.escalate_due()

    assert changed and not changed_again and again.acked_by == "alice"
    assert [s.label for s in run.sent] == ["acknowledged"] and run_again.sent == ()
    assert later.sent == ()
    announced = [item for item in who_got_what(receiver, smtp) if item not in paged_items]
    assert sorted(who for who, _ in announced) == sorted(
        ["slack:oncall", "teams:l2-senior", f"mail:{OPS}"]
    )
    assert all("acknowledged by alice" in text.lower() or "ACK" in text for _, text in announced)
    assert not any("director" in who for who in recipients(receiver, smtp))
    (status,) = escalator.status(include_resolved=True)
    assert (status.alert.state, status.level, status.alert.acked_by) == (
        "acknowledged",
        "L2",
        "alice",
    )
    assert [a.alert.state for a in escalator.status()] == ["acknowledged"]  # until resolved


def test_two_concurrent_escalate_processes_page_each_level_once(
    settings: dict[str, str],
    tmp_path: Path,
    receiver: WebhookReceiver,
    smtp: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    opener = build_escalator(tmp_path / "logs")
    opener.clock = lambda: time.time() - 31 * MIN  # raised 31 minutes ago, nobody paged yet
    alert_id = opener.open(rollback()).fields["Alert"]
    receiver.script("teams", Reply(202, delay=0.3))  # keep the first runner busy a while
    env = dict(os.environ)

    runners = [
        subprocess.Popen(
            [str(DHASH), "notify", "escalate", "--json"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [r.communicate(timeout=60) for r in runners]

    assert [r.returncode for r in runners] == [0, 0], outputs
    labels = sorted(s["label"] for out, _ in outputs for s in json.loads(out)["sent"])
    assert labels == ["L1", "L2", "L3"]
    assert sorted(recipients(receiver, smtp)) == sorted(EVERY_LEVEL)
    capsys.readouterr()
    assert main(["notify", "escalate"]) == 0  # a third run, a minute later: all levels paged
    assert capsys.readouterr().out.strip() == "nothing due"
    assert len(smtp.mails) == 2
    assert {s.alert.id for s in opener.status()} == {alert_id}


def test_runners_racing_in_threads_at_each_level_page_it_once(
    settings: dict[str, str], tmp_path: Path, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    clock = FakeClock(1_800_000_000.0)
    runners = [build_escalator(tmp_path / "logs") for _ in range(4)]  # one connection each
    for runner in runners:
        runner.clock = clock
    runners[0].open(rollback())
    labels: list[str] = []

    for minutes in (0, 15, 30):
        clock.now = 1_800_000_000.0 + minutes * MIN
        start = threading.Barrier(len(runners))

        def run(runner: Escalator, start: threading.Barrier = start) -> None:
            start.wait()
            labels.extend(s.label for s in runner.escalate_due().sent)

        threads = [threading.Thread(target=run, args=(r,)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)

    assert labels == ["L1", "L2", "L3"]
    assert sorted(recipients(receiver, smtp)) == sorted(EVERY_LEVEL)


def test_a_page_claimed_by_a_runner_that_died_is_taken_over_once_its_claim_is_stale(
    notifier: Notifier, clock: FakeClock, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    escalator = escalator_of(notifier)
    escalator.open(rollback())
    (claimed,) = escalator.alerts.claim(lambda alert, taken: [("page:0", "L1")], clock())
    # ...and the runner that claimed L1 is killed before sending it.

    clock.now += 60
    assert escalator.escalate_due().sent == ()  # a live claim: not paged twice
    clock.now += escalator.alerts.stale_claim_seconds
    taken_over = escalator.escalate_due()

    assert [s.label for s in taken_over.sent] == ["L1"]
    assert recipients(receiver, smtp) == ["slack:oncall"]
    escalator.alerts.finish(claimed, {"the dead runner": "sent"}, clock())  # its token is void
    (page,) = escalator.status()[0].alert.notices
    assert page.outcomes == {"slack:<@U0ONCALL>": "sent"}


def test_a_resolved_alert_stops_paging_and_the_paged_level_hears_it(
    notifier: Notifier, clock: FakeClock, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    alert_id = notifier.send(rollback(run_id="deploy-7")).event.fields["Alert"]
    escalator = escalator_of(notifier)
    clock.advance(10)

    recovered = notifier.send(
        Event(
            kind="success",
            env="production",
            message="Rolled back to 1.2.2: the gate recovered",
            run_id="rollback-8",
            phase="rolled_back",
            resolves="deploy-7",  # the deploy that raised the alert
        )
    )
    clock.advance(30)
    later = escalator.escalate_due()

    assert "Alert" not in recovered.event.fields  # an INFO notice escalates nothing
    assert later.sent == ()
    assert recipients(receiver, smtp) == ["slack:oncall", "slack:oncall"]  # L1 page, resolution
    assert "resolved" in receiver.accepted("slack")[1]["text"].lower()
    (status,) = escalator.status(include_resolved=True)
    assert (status.alert.id, status.alert.state, status.next_level) == (alert_id, "resolved", None)
    assert escalator.resolve("deploy-7", "bob") == []  # already closed: nothing to do


def test_a_rollback_that_completes_resolves_the_alert_its_own_run_raised(
    notifier: Notifier, clock: FakeClock, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    run = "rollback-20261202T031500Z-cc03"
    started = notifier.send(rollback(run_id=run))
    clock.advance(3)
    done = rollback(run_id=run, phase="rolled_back", severity=Severity.WARN, message="Rolled back")
    notifier.send(done)
    clock.advance(30)

    assert "Alert" in started.event.fields and "Alert" not in notifier.send(done).event.fields
    assert escalator_of(notifier).escalate_due().sent == ()
    assert recipients(receiver, smtp) == ["slack:oncall", "slack:oncall"]  # L1 page, resolved
    (status,) = escalator_of(notifier).status(include_resolved=True)
    assert (status.alert.state, status.alert.resolved_by) == ("resolved", "rollback notice")


def test_a_completed_rollback_resolves_the_deploys_alert_and_its_own(
    notifier: Notifier, clock: FakeClock, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    deploy = "deploy-20261202T030000Z-ee05"
    run = "rollback-20261202T031500Z-ee06"
    notifier.send(rollback(run_id=deploy, kind="deploy", phase="failed"))  # the failed deploy
    notifier.send(rollback(run_id=run))  # the rollback's own start notice
    clock.advance(3)
    done = rollback(
        run_id=run, phase="rolled_back", severity=Severity.WARN, message="Rolled back",
        resolves=deploy,
    )  # fmt: skip
    notifier.send(done)
    clock.advance(20 * 60)

    assert escalator_of(notifier).escalate_due().sent == ()  # nobody paged at L2
    states = {
        s.alert.run_id: s.alert.state for s in escalator_of(notifier).status(include_resolved=True)
    }
    assert states == {deploy: "resolved", run: "resolved"}


def test_a_rollback_runs_notices_page_l1_then_resolve_when_it_completes(
    settings: dict[str, str], tmp_path: Path, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    _, handle, logger = open_run_log(tmp_path / "logs", "rollback", "production")
    with handle:
        ctx = RunContext(
            kind="rollback",
            env=load_environment("production", tmp_path),
            target=cast(Target, object()),  # a notice never touches the target
            journal=Journal(tmp_path / "journal.jsonl"),
            run_id="rollback-20261202T031500Z-dd04",
            base=tmp_path,
            log_dir=tmp_path / "logs",
            backup_dir=tmp_path / "backups",
            logger=logger,
            say=lambda _line: None,
        )
        notify(
            ctx, "rollback", "Rolling production back to 1.2.2", severity="ERROR", phase="rollback"
        )
        (opened,) = build_escalator(tmp_path / "logs").status()
        notify(
            ctx, "rollback", "Rolled production back to 1.2.2", severity="WARN", phase="rolled_back"
        )

    assert opened.alert.run_id == ctx.run_id and opened.level == "L1"
    assert build_escalator(tmp_path / "logs").status() == []  # resolved by its own run
    texts = [body["text"] for body in receiver.accepted("slack")]
    assert len(texts) == 2 and "paging L1" in texts[0] and "resolved" in texts[1]


def test_the_cli_resolves_what_a_notice_names(
    notifier: Notifier,
    receiver: WebhookReceiver,
    smtp: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alert_id = notifier.send(rollback(run_id="deploy-42")).event.fields["Alert"]
    args = ["deploy-notify", "--phase", "success", "--env", "production", "--version", "1.2.3"]

    assert main([*args, "--channels", "file", "--resolves", "deploy-42"]) == 0
    assert main(["notify", "status", "--all"]) == 0

    out = capsys.readouterr().out
    assert f"{alert_id}  resolved" in out


def test_resolving_before_anyone_is_paged_sends_nothing_more(
    notifier: Notifier, clock: FakeClock, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    escalator = escalator_of(notifier)
    alert_id = escalator.open(rollback()).fields["Alert"]  # opened, L1 not paged yet

    (closed,) = escalator.resolve(alert_id, "monitor")
    clock.advance(45)

    assert closed.state == "resolved"
    assert escalator.escalate_due().sent == ()
    assert recipients(receiver, smtp) == []


def test_a_re_run_of_the_same_occurrence_is_the_same_alert(
    notifier: Notifier, clock: FakeClock, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    first = notifier.send(rollback()).event.fields["Alert"]
    again = notifier.send(rollback()).event.fields["Alert"]
    other = notifier.send(rollback(run_id="deploy-20261202T150000Z-bb02")).event.fields["Alert"]

    assert first == again != other
    assert recipients(receiver, smtp) == ["slack:oncall", "slack:oncall"]  # one L1 per alert


def test_a_contact_that_fails_is_outboxed_and_retried_by_the_next_run(
    notifier: Notifier, clock: FakeClock, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    notifier.send(rollback())
    escalator = escalator_of(notifier)
    receiver.script("teams", Reply(503), Reply(503))  # both attempts of the L2 page fail
    clock.advance(15)

    first = escalator.escalate_due()
    (page,) = first.sent
    outcomes = {o.channel: o.status for o in page.report.outcomes}
    assert outcomes[f"email:{OPS}"] == Status.SENT
    (teams,) = [name for name in outcomes if name.startswith("teams:")]
    assert outcomes[teams] == Status.OUTBOXED
    assert [i.channel for i in escalator.store.outbox()] == [teams]

    clock.advance(1)
    retried = escalator.escalate_due()

    assert retried.sent == ()  # L2 is not paged twice...
    assert retried.flushed is not None
    assert [(i.outcome.channel, i.outcome.status) for i in retried.flushed.items] == [
        (teams, Status.SENT)
    ]
    assert len(receiver.accepted("teams")) == 1  # ...its outboxed page is delivered once
    assert len(smtp.mails) == 1
    assert escalator.store.outbox() == []


def test_notify_flush_also_re_sends_an_outboxed_page(
    notifier: Notifier,
    clock: FakeClock,
    receiver: WebhookReceiver,
    smtp: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    notifier.send(rollback())
    receiver.script("teams", Reply(503), Reply(503))
    clock.advance(15)
    escalator_of(notifier).escalate_due()
    capsys.readouterr()

    assert main(["notify", "flush"]) == 0

    out = capsys.readouterr().out
    assert "teams:" in out and "sent" in out and "0 left in the outbox" in out
    assert len(receiver.accepted("teams")) == 1


def test_the_cli_lists_acknowledges_and_refuses_an_unknown_id(
    notifier: Notifier,
    receiver: WebhookReceiver,
    smtp: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    alert_id = notifier.send(rollback()).event.fields["Alert"]
    capsys.readouterr()

    assert main(["notify", "status"]) == 0
    listed = capsys.readouterr().out
    assert main(["notify", "ack", alert_id.lower(), "--by", "alice"]) == 0
    acked = capsys.readouterr().out
    assert main(["notify", "status", "--json"]) == 0
    still_open = json.loads(capsys.readouterr().out)
    assert main(["notify", "ack", "A000000"]) == 2
    unknown = capsys.readouterr()

    assert f"{alert_id}  open" in listed and "level L1" in listed
    assert "slack:<@U0ONCALL> (sent)" in listed
    assert f"acknowledge: dhash notify ack {alert_id}" in listed
    assert f"alert {alert_id} acknowledged by alice" in acked
    assert [(a["id"], a["state"], a["acked_by"]) for a in still_open] == [
        (alert_id, "acknowledged", "alice")
    ]
    assert "no alert 'A000000'" in unknown.err and "Traceback" not in unknown.err


def test_escalate_says_so_when_a_matrix_broke_after_the_alert_opened(
    notifier: Notifier,
    tmp_path: Path,
    receiver: WebhookReceiver,
    smtp: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    notifier.send(rollback())
    environments = tmp_path / "dhash-environments.toml"
    environments.write_text(
        environments.read_text().replace("after_minutes = 15", "after_minutes = 0")
    )
    capsys.readouterr()

    assert main(["notify", "escalate"]) == 2

    err = capsys.readouterr().err
    assert "escalation of production is not possible" in err
    assert "after_minutes must increase from level to level" in err and "Traceback" not in err


@pytest.mark.parametrize("command", [["notify", "escalate"], ["notify", "status"]])
def test_a_store_that_is_not_sqlite_is_named_without_a_traceback(
    settings: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
) -> None:
    store = tmp_path / "logs" / STORE_FILE
    store.parent.mkdir()
    store.write_bytes(b"not a database, a half-copied file" * 100)

    assert main(command) == 1

    err = capsys.readouterr().err
    assert f"notification store {store} is unusable: DatabaseError" in err
    assert "Traceback" not in err


def test_escalate_exits_2_naming_a_contact_that_could_not_be_paged(
    settings: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    receiver: WebhookReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("SLACK_WEBHOOK_URL")  # L1's mention has nowhere to go
    alert_id = build_escalator().open(rollback()).fields["Alert"]
    capsys.readouterr()

    assert main(["notify", "escalate"]) == 2
    ran = capsys.readouterr()
    assert main(["notify", "status", "--json"]) == 0

    (status,) = json.loads(capsys.readouterr().out)
    problem = (
        f"alert {alert_id} L1: slack:<@U0ONCALL> was not reached: SLACK_WEBHOOK_URL is not set"
    )
    assert f"dhash: error: {problem}" in ran.err and "Traceback" not in ran.err
    assert "not-configured" in ran.out
    assert status["notices"][0]["contacts"] == {"slack:<@U0ONCALL>": "not-configured"}
    assert receiver.received == []


def test_a_store_written_before_escalation_keeps_its_outbox(
    settings: dict[str, str], tmp_path: Path, receiver: WebhookReceiver
) -> None:
    log_dir = tmp_path / "logs"
    old = DeliveryStore(log_dir / STORE_FILE, dedupe_seconds=86400, stale_claim_seconds=120)
    event = Event(kind="info", env="production", message="queued by an older version")
    claim = old.claim(
        event.dedupe_key,
        "slack",
        {k: v for k, v in event.to_dict().items() if k not in ("run_id", "resolves")},
    )
    assert isinstance(claim, Claim)
    old.finish(claim, sent=False, attempts=1, error="HTTP 503")

    escalator = build_escalator(log_dir)
    assert escalator.status() == []  # the alert tables are added beside it
    flushed = notifier_from_settings("production", channels=["slack"], log_dir=log_dir).flush()

    assert [(i.key, i.outcome.status) for i in flushed.items] == [(event.dedupe_key, Status.SENT)]
    with closing(sqlite3.connect(log_dir / STORE_FILE)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"deliveries", "alerts", "alert_notices"} <= tables


def test_a_watch_that_passes_resolves_the_gate_alert_an_observing_monitor_raised(
    settings: dict[str, str], tmp_path: Path, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    from dhash_rollout.commands.monitor import _CommandEvents, _final_notice
    from dhash_rollout.runs.monitoring import MonitorResult, Verdict

    events = _CommandEvents(load_environment("production", tmp_path), tmp_path / "logs")
    failed = MonitorResult(Verdict.FAILED, "p95HashTime 0.61 s > 0.5 s", "p95HashTime")
    _final_notice(events, failed, None, guarding=False)  # observing: nobody rolls back
    deploy_alert = build_escalator().open(rollback()).fields["Alert"]  # not a gate's alert
    opened = {s.alert.event["kind"]: s.alert.id for s in build_escalator().status()}
    passed = MonitorResult(Verdict.PASSED, "every gate passed for the whole window")
    _final_notice(events, passed, None, guarding=False)  # a later watch, after the fix
    escalator = build_escalator()
    later = escalator.escalate_due(now=time.time() + 45 * MIN)

    states = {s.alert.id: s.alert.state for s in escalator.status(include_resolved=True)}
    assert states == {opened["gate"]: "resolved", deploy_alert: "open"}
    # 45 minutes on, the gate alert pages nobody more; the deploy's climbs its whole matrix.
    assert [(s.alert_id, s.label) for s in later.sent] == [
        (deploy_alert, "L1"),
        (deploy_alert, "L2"),
        (deploy_alert, "L3"),
    ]
    slack = [body["text"] for body in receiver.accepted("slack")]
    gate_texts = [t for t in slack if opened["gate"] in t]
    assert len(gate_texts) == 2  # its L1 page, then its resolution; nothing at L2 or L3
    assert "quality gate violated" in gate_texts[0] and "paging L1" in gate_texts[0]
    assert f"[RESOLVED] alert {opened['gate']}" in gate_texts[1]


def test_a_deploy_with_a_matrix_that_does_not_validate_is_refused_before_it_starts(
    settings: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    environments = tmp_path / "dhash-environments.toml"
    environments.write_text(
        environments.read_text().replace('to = ["' + OPS + '"]', 'to = ["ops-manager"]')
    )

    assert main(["deploy", "--env", "production", "--no-monitor"]) == 2

    err = capsys.readouterr().err
    assert "[production] escalation.levels.1.contacts.1.email.to" in err, err
    assert "'ops-manager' is not an e-mail address" in err and "Traceback" not in err
    assert not list(tmp_path.rglob("*.jsonl"))  # no run was started, nothing journaled
