"""Every command of the operations guide, run verbatim against a local environment.

The guide (``docs/operations-guide.md``, the users' copy; when the shared spec
``../shared/spec/operations-guide.md`` sits beside the checkout, the two must be identical) is
parsed: each fenced ``bash`` block's ``./scripts/...``, ``node scripts/...``, ``node -e`` and
``sha256sum -c`` lines become one test each, in the guide's order, so a command added to the
guide fails here until it works. A ``sha256sum -c`` runs with the variable assignments of its
block; a whole ``#!/bin/bash`` runbook block that verifies checksums (the weekly verification)
runs as one script.

The local environment is a temporary "operations directory": the checkout's ``scripts/`` and
sources linked in, ``quality-gates-config.json``, a ``dhash-environments.toml`` naming
production and staging under ``var/`` on free loopback ports, webhook and SMTP receivers on
127.0.0.1 for the notification channels, and production already running an earlier release
(0.0.9) with a backup and the pre-deployment artifacts the checklist asks for, as it would be
on the day of a deploy. The guide then deploys this checkout, rolls back, and so on. Each of
its rollbacks to "the previous release" assumes a bad deploy just happened; when production
already runs the earlier release, the test deploys this checkout again first (both dry runs,
then the deploy, as the guide does), since a rollback with nothing before it fails (exit 1).

The tests share that one environment and must run in order (they are one scenario); run the
whole module, not a single test. The monitor's commands (``node scripts/monitor_dhash.js``) run
verbatim under real traffic (the load generator against production) with
``DHASH_MONITOR_TIME_SCALE`` set, so the guide's 60-minute window takes seconds; so does the
guide's deploy, whose monitor phase watches the same window (the set-up deploys are
``--no-monitor``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dhash_rollout.backup import create_backup
from dhash_rollout.checks.report import read_log_summary
from dhash_rollout.commands.monitor import TIME_SCALE_ENV
from dhash_rollout.environments import load_environment
from dhash_rollout.releases import source_version
from dhash_rollout.runs.journal import Journal
from dhash_rollout.targets import get_target
from tests.integration.test_notify_receivers import (
    SmtpServer,
    WebhookReceiver,
    smtp_server,
    webhook_receiver,
)
from tests.support.live_server import DHASH, free_port
from tests.support.load import LoadGenerator
from tests.support.release_builds import wheel_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
GUIDE = REPO / "docs" / "operations-guide.md"
SHARED_GUIDE = REPO.parent / "shared" / "spec" / "operations-guide.md"
NODE = shutil.which("node")
PENDING: dict[str, str] = {}
MONITOR_TIME_SCALE = "360"  # the guide's 60 minutes in 10 s, intervals and gate windows alike
PREVIOUS_VERSION = "0.0.9"
TOKEN = "guide-api-token-7f3c9a1e5b"
SLACK_SECRET = "services/T0GUIDE/B0GUIDE/guideslacksecret01"
TEAMS_SECRET = "workflows/guide/teamssecret02"
# The guide's own scripts: what a command line must start with to be one of ours.
_OURS = re.compile(r"^(\./scripts/\S+|node scripts/\S+|node -e |sha256sum -c )")
_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")


# --- the guide, parsed --------------------------------------------------------------------------


@dataclass(frozen=True)
class GuideCommand:
    number: int
    section: str
    command: str  # as the guide writes it (continuation lines joined)
    prelude: tuple[str, ...] = ()  # the block's assignments the command relies on

    @property
    def script(self) -> str | None:
        """``scripts/...`` the command runs, if any."""
        match = re.match(r"^(?:\./|node )(scripts/\S+)", self.command)
        return match.group(1) if match else None

    @property
    def shell(self) -> str:
        return "\n".join([*self.prelude, self.command])

    @property
    def id(self) -> str:
        first = self.command.splitlines()[0] if self.command.startswith("#!") else self.command
        return f"{self.number:02d} {first[:90]}"


def _logical_lines(block: str) -> list[str]:
    lines: list[str] = []
    pending = ""
    for raw in block.splitlines():
        line = raw.strip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        lines.append((pending + line).strip())
        pending = ""
    return [line for line in lines if line]


def parse_guide(text: str) -> list[GuideCommand]:
    """Our commands in the guide's bash blocks, in order, each with its section heading."""
    commands: list[GuideCommand] = []
    section = ""
    for match in re.finditer(
        r"^(#{1,6} [^\n]+)$|^[ \t]*```bash\n(.*?)^[ \t]*```", text, re.S | re.M
    ):
        if match.group(1):
            section = match.group(1).lstrip("#").strip()
            continue
        block = match.group(2)
        lines = [line for line in _logical_lines(block) if not line.startswith("# ")]
        if block.lstrip().startswith("#!"):
            if any("sha256sum -c" in line or _OURS.match(line) for line in lines):
                script = "\n".join(line.strip() for line in block.strip().splitlines())
                commands.append(GuideCommand(len(commands) + 1, section, script))
            continue
        prelude = tuple(line for line in lines if _ASSIGNMENT.match(line))
        for line in lines:
            if _OURS.match(line):
                needed = prelude if line.startswith("sha256sum") else ()
                commands.append(GuideCommand(len(commands) + 1, section, line, needed))
    return commands


COMMANDS = parse_guide(GUIDE.read_text(encoding="utf-8")) if GUIDE.exists() else []


def test_the_guide_is_found_and_parsed() -> None:
    assert GUIDE.exists(), f"the operations guide is expected at {GUIDE}"
    if SHARED_GUIDE.exists():  # the spec beside the checkout: our copy must not drift from it
        assert GUIDE.read_bytes() == SHARED_GUIDE.read_bytes(), f"{GUIDE} differs from the spec"
    scripts = {c.script for c in COMMANDS if c.script}
    assert {
        "scripts/backup_dhash.sh",
        "scripts/deploy_dhash.sh",
        "scripts/migrate_dhash.sh",
        "scripts/rollback_dhash.sh",
        "scripts/smoke_tests.sh",
        "scripts/validate_logging.js",
        "scripts/notify.js",
        "scripts/deploy/deploy-notify.js",
        "scripts/monitor_dhash.js",
    } <= scripts
    assert len(COMMANDS) >= 27
    assert any(c.command.startswith("#!/bin/bash") for c in COMMANDS)  # weekly verification


def test_parse_joins_continuations_and_keeps_the_assignments_a_check_needs() -> None:
    text = (
        '## One\n```bash\n# comment\nX=$(echo a)\nsha256sum -c "${X}.sha256"\n'
        './scripts/a.sh \\\n  --env production \\\n  --reason "r"\ncurl -f http://x\n```\n'
    )
    first, second = parse_guide(text)
    assert (first.section, first.prelude) == ("One", ("X=$(echo a)",))
    assert second.command == './scripts/a.sh --env production --reason "r"'
    assert second.prelude == () and second.script == "scripts/a.sh"


# --- the local environment --------------------------------------------------------------


@dataclass
class OpsDir:
    path: Path
    ports: tuple[int, int]  # production, staging
    env: dict[str, str]
    webhooks: WebhookReceiver
    smtp: SmtpServer

    def run(self, command: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def _environments(path: Path, ports: tuple[int, int], *, preflight: str | None) -> None:
    production = [
        "[production]",
        f"port = {ports[0]}",
        'root = "var/production"',
        'release_deps = "shared"',
        "shutdown_grace_seconds = 3",
        'channels = ["file"]',
        f'api_token = "{TOKEN}"',
    ]
    if preflight:
        production.append(f'preflight = "{preflight}"')
    staging = ["[staging]", f"port = {ports[1]}", 'root = "var/staging"', 'channels = ["file"]']
    (path / "dhash-environments.toml").write_text("\n".join([*production, "", *staging]) + "\n")


def _child_env(webhooks: WebhookReceiver, smtp: SmtpServer) -> dict[str, str]:
    prefixes = ("DHASH_", "SLACK_", "TEAMS_", "DISCORD_", "SMTP_", "PROMETHEUS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env.update(
        {
            "SLACK_WEBHOOK_URL": webhooks.url("slack", SLACK_SECRET),
            "TEAMS_WEBHOOK_URL": webhooks.url("teams", TEAMS_SECRET),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp.port),
            "SMTP_SECURITY": "none",
            "SMTP_FROM": "dhash rollout <dhash@example.org>",
            "SMTP_TO": "ops-manager@example.org",
        }
    )
    return env


def _must(ops: OpsDir, *args: str) -> None:
    done = subprocess.run(
        [DHASH, *args],
        cwd=ops.path,
        env=ops.env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, f"setup: dhash {' '.join(args)}\n{done.stdout}\n{done.stderr}"


def _prepare_production(ops: OpsDir) -> None:
    """Production as it is on deploy day: an earlier release serving, a backup, and the
    checklist's artifacts (test logs from that release, CI bundle, approvals)."""
    wheel = wheel_for(PREVIOUS_VERSION)
    _must(
        ops, "deploy", "--env", "production", "--no-monitor", "--version", PREVIOUS_VERSION,
        "--source", str(wheel),
    )  # fmt: skip
    _must(ops, "backup", "create", "--env", "production")
    assert read_log_summary(ops.path / "postdeploy-smoketests.log").ok  # the deploy's smoke phase
    _must(ops, "validate-logging", "--env", "production")
    (ops.path / "premerge_artifacts").mkdir()
    (ops.path / "premerge_artifacts" / "junit-ubuntu.xml").write_text("<testsuites/>\n")
    approvals = {
        "env": "production",
        "version": source_version(REPO),  # the release the guide's deploy rolls out
        "date": datetime.now(UTC).date().isoformat(),
        "approvers": [{"name": "alice", "role": "SRE"}, {"name": "bob", "role": "developer"}],
        "deployOperator": {"name": "carol", "signedOff": True},
    }
    (ops.path / "approvals.json").write_text(json.dumps(approvals, indent=2))
    # From here on production deploys are gated by the checklist, as they are by default.
    _environments(ops.path, ops.ports, preflight=None)


@pytest.fixture(scope="module")
def ops(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsDir]:
    if NODE is None:
        pytest.fail("node is needed to run the guide's node scripts")
    path = tmp_path_factory.mktemp("ops")
    for name in ("scripts", "src", "requirements", "pyproject.toml", "README.md", ".venv"):
        (path / name).symlink_to(REPO / name)
    shutil.copy2(REPO / "quality-gates-config.json", path / "quality-gates-config.json")
    ports = (free_port(), free_port())
    _environments(path, ports, preflight="warn")  # the first deploy has nothing to check yet
    with webhook_receiver() as webhooks, smtp_server() as smtp:
        ops_dir = OpsDir(path, ports, _child_env(webhooks, smtp), webhooks, smtp)
        try:
            _prepare_production(ops_dir)
            yield ops_dir
        finally:
            for name in ("production", "staging"):
                env = load_environment(name, path)
                if env.root.exists():
                    get_target(env).shutdown()


# --- what each command must have done ------------------------------------------------------


def _journal(ops: OpsDir) -> Journal:
    return Journal.for_root(ops.path / "var" / "production")


def _expect_smoke(ops: OpsDir, cmd: GuideCommand) -> None:
    summary = read_log_summary(ops.path / "postdeploy-smoketests.log")
    assert summary.ok
    assert summary.meta["post_rollback"] == ("--post-rollback" in cmd.command)
    timeout = re.search(r"--timeout (\d+)", cmd.command)
    assert summary.meta["timeout"] == (float(timeout.group(1)) if timeout else 600.0)


def _expect_logging(ops: OpsDir, _cmd: GuideCommand) -> None:
    summary = read_log_summary(ops.path / "test_logging.log")
    assert summary.ok and summary.meta["concurrency"] == 5


def _expect_deploy(ops: OpsDir, cmd: GuideCommand) -> None:
    if "--dry-run" in cmd.command:
        header = (ops.path / "deploy-dryrun.log").read_text().splitlines()[0]
        assert header.startswith("deploy production ")
        return
    run = _journal(ops).last_run("deploy")
    assert run is not None and run.outcome == "done"
    assert run.params["version"] == source_version(REPO)
    assert run.status_of("preflight") == "done"  # enforced, and every item passed
    # The guide: "monitoring automatically begins after deployment" (time-scaled here).
    assert run.detail_of("monitor")["verdict"] in ("passed", "inconclusive")


def _expect_migrate(ops: OpsDir, cmd: GuideCommand) -> None:
    if "--dry-run" in cmd.command:
        assert "result: OK" in (ops.path / "migrate-dryrun.log").read_text()


def _expect_rollback(ops: OpsDir, cmd: GuideCommand) -> None:
    run = _journal(ops).last_run("rollback")
    assert run is not None and run.outcome == "done"
    reason = re.search(r'--reason "([^"$]+)', cmd.command)
    assert reason is not None and run.params["reason"].startswith(reason.group(1))


def _expect_notify(ops: OpsDir, cmd: GuideCommand) -> None:
    if "--channels" in cmd.command:
        assert len(ops.webhooks.accepted("slack")) == 1
        assert len(ops.webhooks.accepted("teams")) == 1
        assert len(ops.smtp.mails) == 1
    elif "--dry-run" in cmd.command:
        assert ops.webhooks.received == []


def _expect_monitor(ops: OpsDir, _cmd: GuideCommand) -> None:
    ledgers = sorted((ops.path / "logs").glob("monitor_production_*.jsonl"), key=os.path.getmtime)
    assert ledgers, "the monitor wrote no ledger"
    rows = [json.loads(line) for line in ledgers[-1].read_text().splitlines()]
    assert rows[-1]["kind"] == "verdict" and rows[-1]["verdict"] == "passed"
    assert sum(r["kind"] == "poll" for r in rows) == 38  # the guide's schedule, scaled
    assert ledgers[-1].with_suffix(".html").exists() and ledgers[-1].with_suffix(".log").exists()


EXPECTATIONS: dict[str, Callable[[OpsDir, GuideCommand], None]] = {
    "scripts/smoke_tests.sh": _expect_smoke,
    "scripts/validate_logging.js": _expect_logging,
    "scripts/deploy_dhash.sh": _expect_deploy,
    "scripts/migrate_dhash.sh": _expect_migrate,
    "scripts/rollback_dhash.sh": _expect_rollback,
    "scripts/notify.js": _expect_notify,
    "scripts/monitor_dhash.js": _expect_monitor,
}


def _fixed(when: datetime) -> Callable[[], datetime]:
    return lambda: when


def _prepare(ops: OpsDir, cmd: GuideCommand) -> None:
    """What the guide assumes exists before a command: a backup it names by file, and for a
    rollback to the previous release, a newer release serving (the incident's deploy), made
    the way the guide deploys: both dry runs, then the deploy."""
    if cmd.script == "scripts/rollback_dhash.sh" and "--backup" not in cmd.command:
        current = get_target(load_environment("production", ops.path)).current()
        if current is not None and current.version == PREVIOUS_VERSION:
            _must(ops, "migrate", "--dry-run", "--env", "production")
            _must(ops, "deploy", "--dry-run", "--env", "production")
            version = source_version(REPO)
            _must(ops, "deploy", "--env", "production", "--no-monitor", "--version", version)
    for named in re.findall(r"backups/(dhash_(\w+?)_(\d{8}_\d{6})\.zip)", cmd.command):
        filename, env_name, stamp = named
        if not (ops.path / "backups" / filename).exists():
            when = datetime.strptime(stamp, "%Y%m%d_%H%M%S").replace(tzinfo=UTC)
            made = create_backup(
                load_environment(env_name, ops.path),
                ops.path / "backups",
                clock=_fixed(when),
            )
            assert made.path.name == filename


# make test runs one command of each of these sets a run (they differ by their flags only, and
# each is the heaviest of the guide: a rollback after a redeploy, a time-scaled 60-minute
# window); make test-full runs every command. A skipped one leaves the state the next expects:
# the rollbacks are each prepared by a redeploy, the monitor changes nothing.
SAMPLED = {
    "rollback-reason": ('--reason "p1-incident-', '--reason "complete-outage"'),
    "monitor-window": ("monitor_dhash.js --env production --duration 60",
                       "monitor_dhash.js --env production --config quality-gates-config.json"),
}  # fmt: skip


def _sampled(cmd: GuideCommand) -> object:
    for group, commands in SAMPLED.items():
        if any(text in cmd.command for text in commands):
            return pytest.param(cmd, marks=pytest.mark.matrix(keep=1, group=group), id=cmd.id)
    return pytest.param(cmd, id=cmd.id)


def test_every_sampled_set_names_commands_of_the_guide() -> None:
    for group, commands in SAMPLED.items():
        for text in commands:
            assert sum(text in c.command for c in COMMANDS) == 1, (group, text)


@pytest.mark.parametrize("cmd", [_sampled(c) for c in COMMANDS])
def test_guide_command(ops: OpsDir, cmd: GuideCommand) -> None:
    script = cmd.script
    if script in PENDING:
        assert not (REPO / script).exists(), f"{script} exists now: remove it from PENDING"
        pytest.skip(f"{PENDING[script]}: {cmd.command}")
    if script is not None:
        assert (REPO / script).is_file(), f"the guide runs {script}, which does not exist"
    _prepare(ops, cmd)
    guarded = script == "scripts/deploy_dhash.sh" and "--dry-run" not in cmd.command
    if script == "scripts/monitor_dhash.js" or guarded:  # real traffic for the gates to measure
        ops.env[TIME_SCALE_ENV] = MONITOR_TIME_SCALE
        try:
            # New images for each command: a duplicate is answered from the store without an
            # extraction or a hash, so repeated seeds would leave the gates without data.
            seeds = cmd.number * 100_000_000
            with LoadGenerator(
                ops.ports[0], TOKEN, threads=3, max_seconds=40, ingest_every=1, seed_base=seeds
            ):
                done = ops.run(cmd.shell)
        finally:
            del ops.env[TIME_SCALE_ENV]
    else:
        done = ops.run(cmd.shell)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{cmd.section}: {cmd.command}\n{output}"
    assert "Traceback" not in output
    if cmd.command.startswith("sha256sum -c"):
        assert re.search(r"backups/dhash_\w+\.zip: OK", done.stdout)
    elif cmd.command.startswith("#!"):
        assert "❌" not in output and "✅" in output
    elif script in EXPECTATIONS:
        EXPECTATIONS[script](ops, cmd)
