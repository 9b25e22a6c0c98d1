"""``dhash notify`` / ``notify flush`` / ``deploy-notify`` and the guide's node shims, run as real
processes against a webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from dhash_rollout.cli import main
from tests.integration.test_notify_receivers import Reply, WebhookReceiver, webhook_receiver

REPO = Path(__file__).resolve().parents[2]
DHASH = Path(sys.executable).parent / "dhash"
NODE = shutil.which("node")
CANARY = "cAnArYcli0e5d41402abc4b2a"

needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed")


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with webhook_receiver() as r:
        yield r


@pytest.fixture
def base_env(receiver: WebhookReceiver, tmp_path: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SLACK_", "TEAMS_", "DISCORD_", "SMTP_", "DHASH_"))
    }
    env.update(
        {
            "SLACK_WEBHOOK_URL": receiver.url("slack", f"services/T1/B1/{CANARY}"),
            "DHASH_ENVIRONMENTS_FILE": str(tmp_path / "dhash-environments.toml"),
            "DHASH_NOTIFY_MAX_ATTEMPTS": "2",
            "DHASH_NOTIFY_BACKOFF_INITIAL_SECONDS": "0.01",
            "DHASH_NOTIFY_BACKOFF_MAX_SECONDS": "0.02",
            "DHASH_NOTIFY_READ_TIMEOUT_SECONDS": "1",
            "DHASH_NOTIFY_TOTAL_SECONDS": "5",
        }
    )
    return env


def run(
    args: list[str], env: dict[str, str], cwd: Path, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        check=False,
        env={**env, **extra},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def dhash(args: list[str], env: dict[str, str], cwd: Path, **extra: str) -> Any:
    return run([str(DHASH), *args], env, cwd, **extra)


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str


@pytest.fixture
def in_process(
    base_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Callable[..., Ran]]:
    """``main(args)`` (what the console script runs) in this process, to keep the suite fast;
    the logging set-up it does is undone afterwards."""
    for name, value in base_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, structlog.get_config())

    def call(args: list[str], **extra: str) -> Ran:
        for name, value in extra.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = main(args)
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    try:
        yield call
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        structlog.configure(**saved[2])


@needs_node
def test_the_guides_dry_run_renders_and_sends_and_writes_nothing(
    base_env: dict[str, str], tmp_path: Path, receiver: WebhookReceiver
) -> None:
    script = REPO / "scripts" / "notify.js"
    done = run(
        ["node", str(script), "--type", "deploy", "--message", "test", "--dry-run"],
        base_env,
        tmp_path,
        DHASH_ENV="production",
        DHASH_LOG_LEVEL="DEBUG",
    )

    assert done.returncode == 0, done.stderr
    assert "dry run: nothing sent" in done.stdout
    assert '"event": "notification"' in done.stdout  # the file channel's rendered line
    assert receiver.received == []
    assert not (tmp_path / "logs").exists()


@needs_node
def test_deploy_notify_start_posts_the_guides_fields(
    base_env: dict[str, str], tmp_path: Path, receiver: WebhookReceiver
) -> None:
    script = REPO / "scripts" / "deploy" / "deploy-notify.js"
    args = ["--phase", "start", "--env", "production", "--version", "v1.2.3"]
    args += ["--initiator", "alice", "--channels", "slack,file"]

    done = run(["node", str(script), *args], base_env, tmp_path)

    assert done.returncode == 0, done.stderr
    (payload,) = receiver.accepted("slack")
    header = payload["attachments"][0]["blocks"][0]["text"]["text"]
    assert header == "[INFO] production: Deployment started v1.2.3"
    assert payload["attachments"][0]["color"] == "#1D9BD1"
    texts = {f["text"] for f in payload["attachments"][0]["blocks"][2]["fields"]}
    assert {"*Environment*\nproduction", "*Version*\nv1.2.3", "*Initiator*\nalice"} <= texts
    (log,) = (tmp_path / "logs").glob("notifications_*.log")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {(line["channel"], line["status"]) for line in lines} == {
        ("slack", "sent"),
        ("file", "sent"),
    }


def _install_fake_release(root: Path, version: str) -> None:
    """The layout ``dhash_rollout.releases`` reads: release.json and the release's dhash."""
    release = root / "releases" / version
    (release / "venv" / "bin").mkdir(parents=True)
    (release / "venv" / "bin" / "dhash").write_text("")
    (release / "release.json").write_text(
        json.dumps(
            {
                "version": version,
                "source": "test",
                "wheel": "x.whl",
                "wheel_sha256": "0" * 64,
                "created_at": "2026-01-01T00:00:00+00:00",
            }
        )
    )
    (root / "current").symlink_to(release)


@pytest.mark.parametrize("active", ["1.2.2", None])
def test_a_rollback_notice_without_version_names_the_active_release(
    in_process: Callable[..., Ran], tmp_path: Path, active: str | None
) -> None:
    root = tmp_path / "srv" / "production"
    root.mkdir(parents=True)
    (tmp_path / "dhash-environments.toml").write_text(f'[production]\nroot = "{root}"\n')
    if active:
        _install_fake_release(root, active)
    args = ["deploy-notify", "--phase", "rollback", "--env", "production"]
    args += ["--reason", "P1 incident recovery", "--trigger", "manual", "--channels", "file"]

    done = in_process([*args, "--json"])

    assert done.code == 0, done.err
    report = json.loads(done.out)
    event = report["event"]
    assert (event["kind"], event["severity"], event["trigger"]) == ("rollback", "ERROR", "manual")
    assert event["version"] == (active or "unknown")
    expected = f"Rollback of production to {active}" if active else "Rollback of production"
    assert event["message"] == f"{expected}: P1 incident recovery"
    assert [o["status"] for o in report["outcomes"]] == ["sent"]


@pytest.mark.parametrize(
    "args, says",
    [
        (["notify", "--type", "bogus", "--message", "x"], "--type"),
        (["notify", "--type", "deploy", "--message", "x", "--subject", "a\r\nBcc: x"], "CR/LF"),
        (["notify", "--type", "deploy", "--message", "x", "--channels", "sms"], "sms"),
        (["notify", "--type", "deploy", "--message", "x", "--env", "prodution"], "prodution"),
        (["notify", "--type", "deploy", "--message", "x", "--severity", "LOUD"], "LOUD"),
        (["notify"], "required"),
        (["deploy-notify", "--phase", "start", "--trigger", "sometimes"], "--trigger"),
        (["notify", "--type", "info", "--message", "x", "--field", "novalue"], "NAME=VALUE"),
    ],
)
def test_usage_errors_exit_2_with_a_message_and_no_traceback(
    *,
    base_env: dict[str, str],
    tmp_path: Path,
    receiver: WebhookReceiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    says: str,
) -> None:
    """In process (the entry point the console script calls), to keep the suite fast."""
    for name, value in base_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    root_handlers = list(logging.getLogger().handlers)

    code = main(args)

    captured = capsys.readouterr()
    assert code == 2, (captured.out, captured.err)
    assert says in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert receiver.received == []
    assert logging.getLogger().handlers == root_handlers  # refused before logging was set up


def test_a_crlf_in_an_email_address_exits_2(in_process: Callable[..., Ran]) -> None:
    done = in_process(
        ["notify", "--type", "info", "--message", "x", "--channels", "email"],
        SMTP_HOST="127.0.0.1",
        SMTP_FROM="dhash@example.org",
        SMTP_SECURITY="none",
        SMTP_TO="ops@example.org\r\nBcc: attacker@example.net",
    )

    assert done.code == 2, done.err
    assert "SMTP_TO" in done.err and "CR/LF" in done.err


def test_a_failed_delivery_exits_0_and_flush_sends_it_later(
    base_env: dict[str, str],
    tmp_path: Path,
    receiver: WebhookReceiver,
    in_process: Callable[..., Ran],
) -> None:
    receiver.script("slack", *[Reply(500, body="boom", echo_path=True)] * 2)
    args = ["notify", "--type", "failure", "--env", "production", "--message", "deploy failed"]

    sent = dhash(
        [*args, "--channels", "slack", "--json"], base_env, tmp_path, DHASH_LOG_LEVEL="DEBUG"
    )

    assert sent.returncode == 0, sent.stderr
    outcome = json.loads(sent.stdout)["outcomes"][0]
    assert (outcome["status"], outcome["attempts"]) == ("outboxed", 2)
    assert CANARY not in sent.stdout + sent.stderr
    assert "[REDACTED]" in sent.stderr  # httpx's request log line, URL hidden

    listed = in_process(["notify", "flush", "--dry-run", "--json"])
    assert [i["status"] for i in json.loads(listed.out)["items"]] == ["outboxed"]
    flushed = in_process(["notify", "flush", "--json"])

    assert flushed.code == 0, flushed.err
    report = json.loads(flushed.out)
    assert ([i["status"] for i in report["items"]], report["remaining"]) == (["sent"], 0)
    assert len(receiver.accepted("slack")) == 1
    assert in_process(["notify", "flush"]).out.strip() == "outbox is empty"


def test_a_delivered_notice_prints_its_summary_without_log_noise_on_stderr(
    base_env: dict[str, str], tmp_path: Path, receiver: WebhookReceiver
) -> None:
    args = ["notify", "--type", "info", "--env", "production", "--message", "quiet"]
    env = {k: v for k, v in base_env.items() if k != "DHASH_LOG_LEVEL"}

    done = dhash([*args, "--channels", "slack,file"], env, tmp_path)

    assert done.returncode == 0, done.stderr
    assert "slack    sent" in done.stdout
    assert done.stderr == ""  # each outcome is in the summary and the notification log


def test_an_outboxed_channel_tells_the_operator_how_to_resend_it(
    receiver: WebhookReceiver, in_process: Callable[..., Ran]
) -> None:
    receiver.script("slack", *[Reply(500, body="boom", echo_path=True)] * 2)
    args = ["notify", "--type", "failure", "--env", "production", "--message", "deploy failed"]

    done = in_process([*args, "--channels", "slack,file"])

    assert done.code == 0, done.err
    assert "slack    outboxed" in done.out
    assert "not delivered yet to slack: kept in the outbox; re-send with `dhash notify flush`" in (
        done.out
    )
    again = in_process([*args, "--channels", "file", "--key", "other"])
    assert "not delivered yet" not in again.out


def test_two_processes_sending_the_same_notice_post_it_once(
    base_env: dict[str, str], tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.script("slack", Reply(200, body="ok", delay=0.3))
    args = [str(DHASH), "notify", "--type", "info", "--env", "production"]
    args += ["--message", "maintenance starts", "--channels", "slack", "--json"]
    same_run = {**base_env, "DHASH_RUN_ID": "maint-20261202"}  # one occurrence, two runners
    procs = [
        subprocess.Popen(
            args, env=same_run, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]

    statuses = sorted(json.loads(out)["outcomes"][0]["status"] for out, _ in outputs)
    assert statuses == ["sent", "skipped-duplicate"]
    assert len(receiver.requests("slack")) == 1


def test_two_rollback_notices_with_the_same_text_on_one_day_are_both_delivered(
    in_process: Callable[..., Ran], receiver: WebhookReceiver
) -> None:
    args = ["deploy-notify", "--phase", "rollback", "--env", "production", "--version", "1.2.2"]
    args += ["--reason", "P1 incident recovery", "--trigger", "manual", "--channels", "slack"]

    first = in_process([*args, "--run-id", "rollback-20261202T031500Z-aa01"])
    second = in_process([*args, "--run-id", "rollback-20261202T151000Z-bb02"])
    unnamed = in_process(args)  # no run id at all: its own occurrence, never the text

    assert [r.code for r in (first, second, unnamed)] == [0, 0, 0]
    assert all("slack    sent" in r.out for r in (first, second, unnamed)), second.out
    texts = {r["text"] for r in receiver.accepted("slack")}
    assert len(receiver.accepted("slack")) == 3 and len(texts) == 1


def test_a_re_run_of_the_same_run_and_phase_is_still_posted_once(
    in_process: Callable[..., Ran], receiver: WebhookReceiver
) -> None:
    args = ["deploy-notify", "--phase", "rollback", "--env", "production", "--version", "1.2.2"]
    args += ["--reason", "P1 incident recovery", "--channels", "slack"]
    args += ["--run-id", "rollback-20261202T031500Z-aa01"]

    first = in_process(args)
    again = in_process(args)
    other_phase = in_process([*args[:2], "failure", *args[3:]])

    assert "slack    sent" in first.out
    assert "slack    skipped-duplicate" in again.out
    assert "slack    sent" in other_phase.out
    assert len(receiver.accepted("slack")) == 2


def test_a_trickling_endpoint_cannot_hold_the_command_past_its_budget(
    base_env: dict[str, str], tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.script("slack", Reply(200, trickle=40.0))  # never silent for a read timeout
    args = ["notify", "--type", "info", "--env", "production", "--message", "slow relay"]

    started = time.monotonic()
    done = dhash(
        [*args, "--channels", "slack,file", "--json"], base_env, tmp_path,
        DHASH_NOTIFY_TOTAL_SECONDS="1",
    )  # fmt: skip
    elapsed = time.monotonic() - started

    assert done.returncode == 0, done.stderr
    statuses = {o["channel"]: o["status"] for o in json.loads(done.stdout)["outcomes"]}
    assert statuses == {"slack": "pending", "file": "sent"}
    # start-up + 1 s budget + 1 s grace (~4 s idle, 13.5 s seen at load 10), not the 40 s trickle
    assert elapsed < 25.0, elapsed
    (log,) = (tmp_path / "logs").glob("notifications_*.log")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert {(line["channel"], line["status"]) for line in lines} == {
        ("file", "sent"),
        ("slack", "pending"),
    }


# --- scripts/lib/dhash.js ---------------------------------------------------------------------


@pytest.fixture
def shim_copy(tmp_path: Path) -> Path:
    """The shims in a checkout without .venv, so dhash.js falls back to ``dhash`` on PATH."""
    scripts = tmp_path / "checkout" / "scripts"
    (scripts / "lib").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "lib" / "dhash.js", scripts / "lib" / "dhash.js")
    shutil.copy(REPO / "scripts" / "notify.js", scripts / "notify.js")
    return scripts


@needs_node
def test_the_shim_runs_dhash_from_path_with_the_arguments_and_its_exit_code(
    shim_copy: Path, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dhash"
    fake.write_text('#!/bin/sh\nprintf "%s|" "$@"\nexit 7\n')
    fake.chmod(0o755)

    done = run(
        ["node", str(shim_copy / "notify.js"), "--message", "two words", "--dry-run"],
        {"PATH": f"{bin_dir}:/usr/bin:/bin"},
        tmp_path,
    )

    assert done.returncode == 7
    assert done.stdout == "notify|--message|two words|--dry-run|"


@needs_node
def test_the_shim_says_when_dhash_cannot_be_found(shim_copy: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    node = str(NODE)

    done = run([node, str(shim_copy / "notify.js"), "--help"], {"PATH": str(empty)}, tmp_path)

    assert done.returncode == 127
    assert "cannot run dhash" in done.stderr


@needs_node
def test_the_shim_prefers_the_checkouts_virtualenv(tmp_path: Path) -> None:
    code = "console.log(require(process.argv[1]).resolveDhash())"
    done = run(["node", "-e", code, str(REPO / "scripts" / "lib" / "dhash.js")], {}, tmp_path)

    assert done.stdout.strip() == str(REPO / ".venv" / "bin" / "dhash")
