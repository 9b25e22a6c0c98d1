"""E-mail notifications against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from dhash_rollout.notify import Event, Notifier, Severity, Status, notifier_from_settings
from dhash_service.errors import ConfigError
from dhash_service.logs import configure_logging
from tests.integration.test_notify_receivers import make_certificate, server_tls, smtp_server

CANARY_PASSWORD = "pw-cAnArY-91c0ffee77"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, certificate: tuple[Path, Path]) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("SLACK_WEBHOOK_URL", "TEAMS_WEBHOOK_URL", "DISCORD_WEBHOOK_URL", "SMTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    values = {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_FROM": "dhash rollout <dhash@example.org>",
        "SMTP_TO": "ops@example.org, Eng Director <eng-director@example.org>",
        "SMTP_SECURITY": "starttls",
        "SMTP_USER": "dhash",
        "SMTP_PASSWORD": CANARY_PASSWORD,
        "DHASH_NOTIFY_SMTP_CA_FILE": str(certificate[0]),
        "DHASH_NOTIFY_MAX_ATTEMPTS": "3",
        "DHASH_NOTIFY_BACKOFF_INITIAL_SECONDS": "0.01",
        "DHASH_NOTIFY_BACKOFF_MAX_SECONDS": "0.05",
        "DHASH_NOTIFY_TOTAL_SECONDS": "5",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return tmp_path / "logs"


def email_notifier(log_dir: Path, port: int, monkeypatch: pytest.MonkeyPatch) -> Notifier:
    monkeypatch.setenv("SMTP_PORT", str(port))
    return notifier_from_settings("production", channels=["email"], log_dir=log_dir)


def rollback_event() -> Event:
    return Event(
        kind="rollback",
        env="production",
        message="Error rate over 5% for 10 minutes.\nRolled back automatically.",
        severity=Severity.ERROR,
        version="v1.2.2",
        reason="quality gate: error rate",
        trigger="automatic",
        phase="rollback",
    )


@pytest.fixture
def starttls_server(certificate: tuple[Path, Path]) -> Iterator[object]:
    with smtp_server(tls=server_tls(*certificate), credentials=("dhash", CANARY_PASSWORD)) as s:
        yield s


def test_starttls_with_auth_delivers_one_well_formed_message(
    env: Path, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server(tls=server_tls(*certificate), credentials=("dhash", CANARY_PASSWORD)) as srv:
        report = email_notifier(env, srv.port, monkeypatch).send(rollback_event())

        outcome = report.outcome("email")
        assert outcome.status == Status.SENT, outcome
        assert outcome.detail == "accepted for 2 recipients"
        (mail,) = srv.mails
    assert mail.tls and mail.authenticated
    assert mail.mail_from == "dhash@example.org"
    assert mail.rcpt_tos == ("ops@example.org", "eng-director@example.org")
    message = mail.message
    assert message["Subject"] == "[dhash] [ERROR] production: Rollback v1.2.2"
    assert message["Message-ID"] == f"<{report.key}@example.org>"
    assert message["Auto-Submitted"] == "auto-generated"
    body = message.get_content()
    assert "Rolled back automatically." in body
    assert "Reason       quality gate: error rate" in body


def test_implicit_tls_delivers(
    env: Path, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_SECURITY", "ssl")
    tls = server_tls(*certificate)
    with smtp_server(tls=tls, implicit_tls=True, credentials=("dhash", CANARY_PASSWORD)) as srv:
        outcome = email_notifier(env, srv.port, monkeypatch).send(rollback_event()).outcome("email")
        assert outcome.status == Status.SENT, outcome
        (mail,) = srv.mails
    assert mail.tls and mail.authenticated
    assert mail.message["Subject"] == "[dhash] [ERROR] production: Rollback v1.2.2"


def test_plain_smtp_without_auth_delivers(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_SECURITY", "none")
    monkeypatch.delenv("SMTP_USER")
    monkeypatch.delenv("SMTP_PASSWORD")
    with smtp_server() as srv:
        outcome = email_notifier(env, srv.port, monkeypatch).send(rollback_event()).outcome("email")
        assert outcome.status == Status.SENT, outcome
        assert not srv.mails[0].tls


def test_a_temporary_smtp_failure_is_retried(
    env: Path, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server(
        tls=server_tls(*certificate), credentials=("dhash", CANARY_PASSWORD), temporary_failures=1
    ) as srv:
        outcome = email_notifier(env, srv.port, monkeypatch).send(rollback_event()).outcome("email")
        assert (outcome.status, outcome.attempts) == (Status.SENT, 2)
        assert len(srv.mails) == 1


def test_a_wrong_password_is_outboxed_without_retries_and_never_logged(
    env: Path,
    certificate: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
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
        with smtp_server(tls=server_tls(*certificate), credentials=("dhash", "other")) as srv:
            report = email_notifier(env, srv.port, monkeypatch).send(rollback_event())
            assert srv.mails == []
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])

    outcome = report.outcome("email")
    assert (outcome.status, outcome.attempts) == (Status.OUTBOXED, 1)
    assert outcome.error and "authentication failed (535)" in outcome.error
    captured = capsys.readouterr()
    texts = [stream.getvalue(), caplog.text, captured.out, captured.err, str(report.to_dict())]
    texts += [p.read_bytes().decode("latin-1") for p in env.iterdir()]
    assert not any(CANARY_PASSWORD in text for text in texts)


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_an_untrusted_certificate_is_refused_not_ignored(
    env: Path, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, security: str
) -> None:
    monkeypatch.delenv("DHASH_NOTIFY_SMTP_CA_FILE")
    monkeypatch.setenv("SMTP_SECURITY", security)
    tls = server_tls(*certificate)
    implicit = security == "ssl"
    with smtp_server(tls=tls, implicit_tls=implicit, credentials=("dhash", CANARY_PASSWORD)) as srv:
        outcome = email_notifier(env, srv.port, monkeypatch).send(rollback_event()).outcome("email")
        assert srv.mails == []
    assert (outcome.status, outcome.attempts) == (Status.OUTBOXED, 1)
    assert outcome.error and "certificate not trusted" in outcome.error


def test_a_server_without_starttls_never_gets_the_password_in_clear(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server() as srv:  # no TLS offered at all
        outcome = email_notifier(env, srv.port, monkeypatch).send(rollback_event()).outcome("email")
        assert srv.mails == []
    assert outcome.status == Status.OUTBOXED
    assert outcome.error and "STARTTLS" in outcome.error


@pytest.mark.parametrize(
    "variable, value",
    [
        ("SMTP_TO", "ops@example.org\r\nBcc: attacker@example.net"),
        ("SMTP_FROM", "dhash@example.org\nBcc: attacker@example.net"),
        ("SMTP_TO", "not-an-address"),
    ],
)
def test_bad_addresses_are_refused_before_anything_is_sent(
    env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with smtp_server() as srv:
        monkeypatch.setenv("SMTP_PORT", str(srv.port))
        with pytest.raises(ConfigError, match=variable):
            notifier_from_settings("production", channels=["email"], log_dir=env, strict=True)
        lenient = notifier_from_settings("production", channels=["email"], log_dir=env)
        outcome = lenient.send(rollback_event()).outcome("email")
        assert srv.mails == []
    assert outcome.status == Status.NOT_CONFIGURED


def test_a_password_without_tls_is_refused(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMTP_SECURITY", "none")

    outcome = email_notifier(env, 2525, monkeypatch).send(rollback_event()).outcome("email")

    assert outcome.status == Status.NOT_CONFIGURED
    assert outcome.error and "without TLS" in outcome.error
