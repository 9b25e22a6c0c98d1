"""The demo's deploy site: a working directory laid out as an operator's, driven through the
real ``dhash`` command line.

``demo-out/rollout/`` holds ``dhash-environments.toml`` (one ``production`` environment on a free
loopback port, the local target, SQLite, the file channel plus Slack pointed at the demo's
loopback receiver), the service's settings file, and then what the toolkit writes there itself:
``var/production`` (releases, supervisord, data), ``backups/`` and ``logs/``. The quality gates
are the checkout's own ``quality-gates-config.json``, copied in unchanged. Every command runs
as a child process from that directory, exactly as a person would type it, with its output
streamed line by line to the story.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dhash_rollout.environments import Environment, load_environment

ENV = "production"
ENVIRONMENTS_FILE = "dhash-environments.toml"
GATES_FILE = "quality-gates-config.json"
COMMAND_TIMEOUT_SECONDS = 600.0

# The service settings of every release of the demo (shared/config/dhash.toml, read through
# DHASH_CONFIG_FILE). An upload may spend up to 5 s extracting and hashing (the default 1.5 s
# refuses a slow hash outright, and the demo's bad release must be slow, not refused), and four
# uploads hash at once per worker, whatever the machine's core count, so the traffic a laptop
# sends reaches the P95 gate's minimum sample count within seconds.
SERVICE_SETTINGS = """\
# The demo's service settings (docs/configuration.md): see dhash_rollout/demo/site.py.
request_time_budget_seconds = 5.0
extraction_concurrency = 4
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def environments_toml(port: int, token: str) -> str:
    """The demo's environments file: production on loopback, embedded defaults only."""
    return (
        f"[{ENV}]\n"
        f"port = {port}\n"
        f'root = "var/{ENV}"\n'
        f"api_token = {_toml_string(token)}\n"
        "# release venvs share this checkout's installed packages: no download at deploy time\n"
        'release_deps = "shared"\n'
        "# the pre-deploy checklist reports what a fresh site lacks (approvals, dry-run logs)\n"
        'preflight = "warn"\n'
        'channels = ["file", "slack"]\n'
        "shutdown_grace_seconds = 5.0\n"
        "# every deploy takes its own backup, however young the last one is\n"
        "backup_max_age_seconds = 0.0\n"
    )


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    returncode: int
    lines: tuple[str, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


@dataclass
class Site:
    base: Path
    port: int
    token: str
    slack_url: str

    @classmethod
    def create(cls, base: Path, slack_url: str, gates: Path) -> Site:
        """A fresh site in ``base`` with the checkout's quality gates (``gates``, the file the
        deploy's monitor reads from its working directory); a previous demo's site is shut
        down and removed first."""
        if (base / ENVIRONMENTS_FILE).exists():
            cls(base, 0, "", slack_url).shutdown()
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        site = cls(base, free_port(), secrets.token_urlsafe(24), slack_url)
        (base / ENVIRONMENTS_FILE).write_text(
            environments_toml(site.port, site.token), encoding="utf-8"
        )
        shutil.copy2(gates, base / GATES_FILE)
        config = site.env.service_config_file
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(SERVICE_SETTINGS, encoding="utf-8")
        return site

    @property
    def env(self) -> Environment:
        return load_environment(ENV, self.base)

    @property
    def url(self) -> str:
        return self.env.url

    @property
    def logs(self) -> Path:
        return self.base / "logs"

    def child_env(self) -> dict[str, str]:
        """What a ``dhash`` child runs with: no DHASH_* or webhook URL leaking in from the
        caller's shell, this site's environments file, Slack pointed at the receiver."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("DHASH_") and not k.endswith("_WEBHOOK_URL")
        }
        env["DHASH_ENVIRONMENTS_FILE"] = str(self.base / ENVIRONMENTS_FILE)
        env["SLACK_WEBHOOK_URL"] = self.slack_url
        env["PYTHONUNBUFFERED"] = "1"  # progress lines reach the story as they are printed
        return env

    def run(
        self,
        argv: list[str],
        on_line: Callable[[str], None] = lambda _line: None,
        timeout: float = COMMAND_TIMEOUT_SECONDS,
    ) -> Command:
        """Run ``argv`` from the site; ``dhash`` means this checkout's own CLI."""
        real = (
            [sys.executable, "-m", "dhash_rollout.cli", *argv[1:]] if argv[0] == "dhash" else argv
        )
        started = time.monotonic()
        lines: list[str] = []
        try:
            proc = subprocess.Popen(
                real,
                cwd=self.base,
                env=self.child_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
        except OSError as exc:  # e.g. sha256sum missing: a failed step, told, not a traceback
            line = f"cannot run {argv[0]}: {exc.strerror or exc}"
            on_line(line)
            return Command(tuple(argv), 127, (line,), time.monotonic() - started)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                lines.append(line)
                on_line(line)
            returncode = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        return Command(tuple(argv), returncode, tuple(lines), time.monotonic() - started)

    def shutdown(self) -> None:
        """Stop serving and the environment's supervisord (nothing of the demo keeps running)."""
        if (self.base / ENVIRONMENTS_FILE).exists():
            self.run(["dhash", "release", "stop", "--env", ENV, "--all"], timeout=120)
