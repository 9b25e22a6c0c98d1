"""Acknowledging an alert through the link in its page: real HTTP on 127.0.0.1, on a fake clock.

The pages go to the real webhook receivers and aiosmtpd of the notification tests; the links in
them are followed with httpx against the ack listener (uvicorn in a thread here, the real
``dhash notify ack-server`` process in the last tests). The matrix is the escalation tests':
L1 a Slack mention, L2 Teams and the ops manager's mail after 15 min, L3 Discord and the
director's mail after 30.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dhash_rollout.cli import main
from dhash_rollout.notify import Notifier, notifier_from_settings
from dhash_rollout.notify.ack_link import AckGrant, sign
from dhash_rollout.notify.ack_server import ack_app
from dhash_rollout.notify.ack_server import server as ack_server
from dhash_rollout.notify.escalator import Escalator
from dhash_rollout.notify.factory import build_escalator
from tests.integration.test_notify_escalation import (
    DHASH,
    DIRECTOR,
    MIN,
    OPS,
    FakeClock,
    notify_env,
    recipients,
    rollback,
)
from tests.integration.test_notify_receivers import (
    SmtpServer,
    WebhookReceiver,
    smtp_server,
    webhook_receiver,
)

SECRET = "ack-secret-canary-" + "7f3a" * 8  # looked for in every log, file and output
_TOKEN = re.compile(r"/ack/([A-Za-z0-9_-]+\.[A-Za-z0-9_-]+)")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_800_000_000.0)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def listen() -> Iterator[socket.socket]:
    sock = _free_socket()
    yield sock
    sock.close()


@pytest.fixture
def settings(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    receiver: WebhookReceiver,
    smtp: SmtpServer,
    listen: socket.socket,
) -> dict[str, str]:
    listener = f"http://127.0.0.1:{listen.getsockname()[1]}/oncall"
    return notify_env(
        monkeypatch,
        tmp_path,
        receiver,
        smtp,
        DHASH_NOTIFY_ACK_SECRET=SECRET,
        DHASH_NOTIFY_ACK_URL=listener,
    )


@pytest.fixture
def notifier(settings: dict[str, str], clock: FakeClock) -> Notifier:
    sender = notifier_from_settings("production", channels=["file"], strict=True)
    assert isinstance(sender.escalation, Escalator)
    sender.escalation.clock = clock
    return sender


def escalator_of(notifier: Notifier) -> Escalator:
    assert isinstance(notifier.escalation, Escalator)
    return notifier.escalation


@pytest.fixture
def listener(
    settings: dict[str, str], clock: FakeClock, listen: socket.socket
) -> Iterator[httpx.Client]:
    """The ack app under uvicorn on the bound socket, each request on the shared fake clock.
    The client talks to it like a phone's browser behind a proxy that strips ``/oncall``."""

    def escalator() -> Escalator:
        found = build_escalator(strict=True)
        found.clock = clock
        return found

    server = ack_server(ack_app(escalator, SECRET), "127.0.0.1", listen.getsockname()[1])
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listen]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    base = f"http://127.0.0.1:{listen.getsockname()[1]}"
    with httpx.Client(base_url=base, timeout=10, follow_redirects=False) as client:
        yield client
    server.should_exit = True
    thread.join(timeout=10)


def path_of(link: str) -> str:
    """The listener's path of a link: the proxy prefix (``/oncall``) stripped."""
    match = _TOKEN.search(link)
    assert match, link
    return f"/ack/{match.group(1)}"


def slack_link(body: dict[str, Any]) -> str:
    for block in body["attachments"][0]["blocks"]:
        text = block.get("text", {}).get("text", "")
        if text.startswith("<http") and "|Acknowledge alert" in text:
            return str(text[1:].split("|", 1)[0])
    raise AssertionError(f"no ack link in {body}")


def teams_link(body: dict[str, Any]) -> str:
    (action,) = body["attachments"][0]["content"]["actions"]
    assert action["type"] == "Action.OpenUrl" and action["title"].startswith("Acknowledge alert")
    return str(action["url"])


def discord_link(body: dict[str, Any]) -> str:
    return str(body["embeds"][0]["url"])


def mail_link(smtp: SmtpServer, to: str) -> str:
    (mail,) = [m for m in smtp.mails if to in m.rcpt_tos]
    match = re.search(r"http://127\.0\.0\.1:\d+/oncall/ack/\S+", mail.message.get_content())
    assert match, mail.message.get_content()
    return match.group(0).rstrip(",.")


def test_a_page_link_shows_a_confirm_page_and_only_its_post_acknowledges_stopping_l2(
    notifier: Notifier,
    listener: httpx.Client,
    clock: FakeClock,
    receiver: WebhookReceiver,
    *,
    smtp: SmtpServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = notifier.send(rollback())
    alert_id = report.event.fields["Alert"]
    escalator = escalator_of(notifier)
    (l1,) = receiver.accepted("slack")
    link = slack_link(l1)
    assert link.startswith(notifier_settings_url() + "/ack/")
    assert f"or open {link}" in l1["text"]

    shown = listener.get(path_of(link))  # what an unfurler or a prefetcher does
    head = listener.head(path_of(link))
    clock.advance(10)
    still_open = escalator.status()[0].alert.state
    done = listener.post(path_of(link), data={"by": "alice"})
    clock.advance(10)  # 20 minutes: L2 was due at 15
    later = escalator.escalate_due()

    assert shown.status_code == head.status_code == 200 and still_open == "open"
    assert '<form method="post">' in shown.text and f"Acknowledge alert {alert_id}?" in shown.text
    assert shown.headers["cache-control"] == "no-store"
    assert shown.headers["referrer-policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in shown.headers["content-security-policy"]
    assert done.status_code == 200 and f"Alert {alert_id} acknowledged" in done.text
    assert "No further levels will be paged" in done.text
    assert later.sent == ()
    assert recipients(receiver, smtp) == ["slack:oncall", "slack:oncall"]  # page, then the ack
    announcement = receiver.accepted("slack")[1]["text"]
    assert "acknowledged by alice" in announcement and "through the L1 ack link" in announcement
    (status,) = escalator.status()
    assert (status.alert.acked_by, status.alert.acked_via) == ("alice", "the L1 ack link")
    assert status.alert.acked_at == clock.now - 10 * MIN
    capsys.readouterr()
    assert main(["notify", "status"]) == 0
    assert "acknowledged by alice at 2027-01-15T08:10:00+00:00 through the L1 ack link" in (
        capsys.readouterr().out
    )


def notifier_settings_url() -> str:
    return os.environ["DHASH_NOTIFY_ACK_URL"]


def test_the_l2_links_in_teams_and_mail_acknowledge_at_20_minutes_once_and_l3_is_never_paged(
    notifier: Notifier,
    listener: httpx.Client,
    clock: FakeClock,
    receiver: WebhookReceiver,
    smtp: SmtpServer,
) -> None:
    alert_id = notifier.send(rollback()).event.fields["Alert"]
    escalator = escalator_of(notifier)
    clock.advance(15)
    escalator.escalate_due()
    (l2_card,) = receiver.accepted("teams")
    by_mail, by_teams = mail_link(smtp, OPS), teams_link(l2_card)
    assert (
        path_of(by_mail) == path_of(by_teams) != path_of(slack_link(receiver.accepted("slack")[0]))
    )

    clock.advance(5)
    first = listener.post(path_of(by_mail), data={"by": "Olivia (ops)"})
    told = recipients(receiver, smtp)
    second = listener.post(path_of(by_teams), data={"by": "bob"})  # a second person, later
    shown = listener.get(path_of(by_teams))
    clock.advance(40)
    later = escalator.escalate_due()

    assert first.status_code == second.status_code == shown.status_code == 200
    assert "acknowledged by Olivia (ops)" in second.text and "already acknowledged" in second.text
    assert "<form" not in shown.text and f"Alert {alert_id} is acknowledged" in shown.text
    assert later.sent == () and recipients(receiver, smtp) == told  # nobody told twice
    assert sorted(told) == sorted(
        ["slack:oncall", "teams:l2-senior", f"mail:{OPS}"] * 2  # each paged, each told once
    )
    assert not any(DIRECTOR in who or "discord" in who for who in told)
    (status,) = escalator.status()
    assert (status.alert.acked_by, status.alert.acked_via) == ("Olivia (ops)", "the L2 ack link")


def test_the_l3_discord_page_links_its_title_and_the_notice_itself_carries_a_link(
    notifier: Notifier,
    listener: httpx.Client,
    clock: FakeClock,
    receiver: WebhookReceiver,
    smtp: SmtpServer,
) -> None:
    report = notifier.send(rollback())
    clock.advance(30)
    escalator_of(notifier).escalate_due()
    (l3,) = receiver.accepted("discord")
    by_mail = mail_link(smtp, DIRECTOR)
    notice_link = report.event.fields["Acknowledge link"]

    done = listener.post(path_of(discord_link(l3)), data={"by": "dana"})
    again = listener.post(path_of(notice_link), data={"by": "erin"})

    assert path_of(by_mail) == path_of(discord_link(l3)) != path_of(notice_link)
    assert done.status_code == 200 and again.status_code == 200
    assert "already acknowledged" in again.text and "dana" in again.text
    (status,) = escalator_of(notifier).status()
    assert status.alert.acked_via == "the L3 ack link"


def test_forged_expired_nameless_and_odd_requests_acknowledge_nothing(
    notifier: Notifier,
    listener: httpx.Client,
    clock: FakeClock,
    receiver: WebhookReceiver,
    smtp: SmtpServer,
) -> None:
    alert_id = notifier.send(rollback()).event.fields["Alert"]
    path = path_of(slack_link(receiver.accepted("slack")[0]))
    token = path.rsplit("/", 1)[1]
    tampered = f"/ack/{token[:-3]}{'AAA' if not token.endswith('AAA') else 'BBB'}"
    other_key = "/ack/" + sign("another-secret-" + "x" * 30, AckGrant(alert_id, 0, 2**31))
    no_alert = "/ack/" + sign(SECRET, AckGrant("A000000", 0, 2**31))

    answers = {
        "tampered GET": listener.get(tampered).status_code,
        "tampered POST": listener.post(tampered, data={"by": "mallory"}).status_code,
        "other key": listener.post(other_key, data={"by": "mallory"}).status_code,
        "unknown alert": listener.get(no_alert).status_code,
        "no name": listener.post(path, data={"by": "  "}).status_code,
        "two lines": listener.post(path, data={"by": "eve\nroot"}).status_code,
        "json": listener.post(path, json={"by": "eve"}).status_code,
        "too large": listener.post(path, data={"by": "x" * 5000}).status_code,
        "PUT": listener.put(path, data={"by": "eve"}).status_code,
        "elsewhere": listener.get("/ack").status_code,
    }
    nameless = listener.post(path, data={"by": ""})
    clock.advance(24 * 60)  # the link's day is over
    expired_get, expired_post = listener.get(path), listener.post(path, data={"by": "late"})

    assert answers == {
        "tampered GET": 404,
        "tampered POST": 404,
        "other key": 404,
        "unknown alert": 404,
        "no name": 400,
        "two lines": 400,
        "json": 415,
        "too large": 413,
        "PUT": 405,
        "elsewhere": 404,
    }
    assert "Please give your name" in nameless.text and '<form method="post">' in nameless.text
    assert (expired_get.status_code, expired_post.status_code) == (410, 410)
    assert f"dhash notify ack {alert_id}" in expired_get.text
    assert nameless.headers["x-frame-options"] == "DENY"
    assert escalator_of(notifier).status()[0].alert.state == "open"
    assert recipients(receiver, smtp) == ["slack:oncall"]  # nobody told of an ack


def test_the_secret_never_reaches_logs_files_or_output_and_tokens_stay_out_of_logs(
    notifier: Notifier,
    listener: httpx.Client,
    receiver: WebhookReceiver,
    tmp_path: Path,
    *,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG")
    notifier.send(rollback())
    path = path_of(slack_link(receiver.accepted("slack")[0]))
    token = path.rsplit("/", 1)[1]
    listener.get(path)
    listener.get(path[:-2] + "xx")
    listener.post(path, data={"by": "alice"})

    out, err = capfd.readouterr()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files and not [p for p in files if SECRET.encode() in p.read_bytes()]
    assert SECRET not in out + err + caplog.text
    # The listener logs alert ids, never the link (the test's own httpx client logs its URLs).
    ours = "\n".join(
        r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))
    )
    assert token not in out + err + ours
    assert "notify.acked_via_link" in out + err + ours


def _wait_healthy(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("ack-server did not come up")


def test_the_ack_server_command_serves_links_signed_before_a_rotation_until_sigterm(
    settings: dict[str, str], tmp_path: Path, receiver: WebhookReceiver, listen: socket.socket
) -> None:
    escalator = build_escalator()
    alert = escalator.open(rollback())  # the notice as sent, with its link (real clock)
    escalator.escalate_due()
    port = listen.getsockname()[1]
    listen.close()  # the child binds the port the links name
    rotated = "ack-secret-rotated-" + "c0de" * 8  # the link was signed with SECRET, now previous
    server = subprocess.Popen(
        [str(DHASH), "notify", "ack-server", "--listen", f"127.0.0.1:{port}"],
        cwd=tmp_path,
        env={
            **os.environ,
            "DHASH_NOTIFY_ACK_SECRET": rotated,
            "DHASH_NOTIFY_ACK_SECRET_PREVIOUS": SECRET,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, server)
        path = path_of(alert.fields["Acknowledge link"])
        shown = httpx.get(base + path, timeout=10)
        done = httpx.post(base + path, data={"by": "night shift"}, timeout=10)
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=15)

    assert shown.status_code == 200 and "<form" in shown.text
    assert done.status_code == 200 and "acknowledged" in done.text
    # uvicorn shuts down gracefully, then re-raises the signal: ended by SIGTERM, in time.
    assert server.returncode == -signal.SIGTERM, err
    assert f"dhash ack listener on http://127.0.0.1:{port}/ack/<token>" in out
    assert SECRET not in out + err and rotated not in out + err and path not in out + err
    (status,) = build_escalator().status()
    assert (status.alert.acked_by, status.alert.acked_via) == (
        "night shift",
        "the notice's ack link",
    )


def test_ack_links_without_a_usable_secret_are_refused_naming_the_variable(
    settings: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DHASH_NOTIFY_ACK_SECRET_PREVIOUS", "old")
    assert main(["notify", "escalate"]) == 2
    short_previous = capsys.readouterr().err
    monkeypatch.delenv("DHASH_NOTIFY_ACK_SECRET_PREVIOUS")
    monkeypatch.delenv("DHASH_NOTIFY_ACK_SECRET")
    assert main(["notify", "escalate"]) == 2
    unset = capsys.readouterr().err
    monkeypatch.setenv("DHASH_NOTIFY_ACK_SECRET", "short")
    assert main(["notify", "ack-server"]) == 2
    short = capsys.readouterr().err
    monkeypatch.delenv("DHASH_NOTIFY_ACK_URL")
    monkeypatch.delenv("DHASH_NOTIFY_ACK_SECRET")
    assert main(["notify", "ack-server"]) == 2
    missing = capsys.readouterr().err

    assert "DHASH_NOTIFY_ACK_SECRET_PREVIOUS must be at least 32 characters" in short_previous
    assert "DHASH_NOTIFY_ACK_URL is set but DHASH_NOTIFY_ACK_SECRET is not" in unset
    assert "DHASH_NOTIFY_ACK_SECRET must be at least 32 characters" in short
    assert "DHASH_NOTIFY_ACK_SECRET is not set" in missing
    assert "Traceback" not in unset + short + missing


UNIT = Path(__file__).resolve().parents[2] / "docs" / "systemd" / "dhash-ack.service"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not here")
def test_the_shipped_ack_unit_runs_the_listener_on_loopback_and_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text(encoding="utf-8")
    exec_start = "/srv/dhash/ops/.venv/bin/dhash notify ack-server --listen 127.0.0.1:8089"
    lines = text.splitlines()
    assert f"ExecStart={exec_start}" in lines
    assert "EnvironmentFile=/srv/dhash/ops/.env" in lines  # the secret comes from there...
    assert not [line for line in lines if line.startswith("Environment=")]  # ...never the unit
    unit = tmp_path / "dhash-ack.service"
    unit.write_text(text.replace("/srv/dhash/ops/.venv/bin/dhash", str(DHASH)), "utf-8")
    done = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert str(unit) not in done.stderr + done.stdout, done.stderr
