"""No configured secret leaks: a canary value in every secret a deploy knows (the API token, the
Slack, Teams and Discord webhook URLs, the SMTP password, the database password) appears in none
of what a deploy and a rollback on the local target leave or say: their output, the journal,
every log (the service's, supervisord's, the rollout's), the monitor's log, ledger, samples and
HTML report (the second deploy is guarded, its window time-scaled), the notices delivered (webhook
bodies, mails, the file channel) and every other text file under the environment's root.

The only files allowed to hold a secret are the ones that must: the environments file the test
wrote, and supervisord's program files (they pass the API token and the database URL to the
service; mode 0600).
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from tests.integration.test_notify_receivers import (
    make_certificate,
    server_tls,
    smtp_server,
    webhook_receiver,
)
from tests.support.release_builds import CHECKOUT, dhash_bin, dhash_env, wheel_for
from tests.support.rollout_site import Site

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]

CANARIES = {
    "api token": "cAnArYtOkEn4d81e0b7f2",
    "slack webhook": "cAnArYsLaCk93a7c11e0",
    "teams webhook": "cAnArYtEaMs5b02d9e4a",
    "discord webhook": "cAnArYdIsCoRd7f6e2c1",
    "smtp password": "cAnArYsMtPpW8c3b1a90",
    "database password": "cAnArYdBpW2e9f4d7c05",
}
SMTP_USER = "dhash-canary"
# What supervisord's program files hand the service (DHASH_API_TOKENS, DHASH_DATABASE_URL).
SERVICE_NEEDS = {"api token", "database password"}


def _leaks(text: str) -> list[str]:
    return [name for name, value in CANARIES.items() if value in text]


def _contents(path: Path) -> list[tuple[str, bytes]]:
    """A file's bytes, or each member's for a zip (a backup: its manifest and dump)."""
    if path.suffix != ".zip":
        return [("", path.read_bytes())]
    with zipfile.ZipFile(path) as archive:
        return [(f"!{name}", archive.read(name)) for name in archive.namelist()]


def _text_files(root: Path) -> list[Path]:
    """Every regular file under ``root``, not following the checkout's links."""
    found = []
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not (Path(directory) / d).is_symlink()]
        found.extend(Path(directory) / f for f in files if not (Path(directory) / f).is_symlink())
    return found


def test_no_secret_appears_in_anything_a_deploy_and_a_rollback_leave_or_say(
    tmp_path: Path, postgres_url: str
) -> None:
    user_part = "postgresql+psycopg://postgres@"
    assert postgres_url.startswith(user_part), postgres_url
    database_url = postgres_url.replace(
        user_part, f"postgresql+psycopg://postgres:{CANARIES['database password']}@"
    )  # the test server trusts loopback, so the password is carried and ignored
    (tmp_path / "tls").mkdir()
    cert, key = make_certificate(tmp_path / "tls")
    with (
        webhook_receiver() as webhooks,
        smtp_server(
            tls=server_tls(cert, key), credentials=(SMTP_USER, CANARIES["smtp password"])
        ) as smtp,
    ):
        secrets = {
            "SLACK_WEBHOOK_URL": webhooks.url(
                "slack", f"services/T0/B0/{CANARIES['slack webhook']}"
            ),
            "TEAMS_WEBHOOK_URL": webhooks.url("teams", f"workflows/{CANARIES['teams webhook']}"),
            "DISCORD_WEBHOOK_URL": webhooks.url(
                "discord", f"api/webhooks/1/{CANARIES['discord webhook']}"
            ),
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp.port),
            "SMTP_SECURITY": "starttls",
            "SMTP_USER": SMTP_USER,
            "SMTP_PASSWORD": CANARIES["smtp password"],
            "SMTP_FROM": "dhash rollout <dhash@example.org>",
            "SMTP_TO": "ops@example.org",
            "DHASH_NOTIFY_SMTP_CA_FILE": str(cert),
        }

        def run(*args: str) -> str:
            """``dhash ARGS`` from the site with the secrets in its environment, as CI has them."""
            began = time.monotonic()
            done = subprocess.run(
                [dhash_bin(), *args],
                cwd=site.base,
                env={**dhash_env(site.base), **secrets},
                capture_output=True,
                text=True,
                timeout=240,
                check=False,
            )
            assert done.returncode == 0, f"dhash {' '.join(args)}: {done.stdout}{done.stderr}"
            print(f"dhash {args[0]}: {time.monotonic() - began:.1f} s")
            return done.stdout + done.stderr

        site = Site.create(
            tmp_path / "site",
            api_token=CANARIES["api token"],
            database_url=database_url,
            channels=["slack", "teams", "discord", "email", "file"],
        )
        outputs = []
        try:
            first = wheel_for("0.0.9")
            outputs.append(
                run("deploy", "--env", "production", "--no-monitor", "--source", str(first))
            )
            # Guarded: the monitor reads /metrics with the token and writes its own files.
            gates = str(CHECKOUT / "quality-gates-config.json")
            outputs.append(
                run("deploy", "--env", "production", "--source", str(wheel_for("0.0.10")),
                    "--time-scale", "720", "--gates-config", gates)
            )  # fmt: skip
            site.ingest(1, token=CANARIES["api token"])  # the API token in use
            outputs.append(run("rollback", "--env", "production", "--reason", "canary check"))
            outputs.append(run("release", "status", "--env", "production"))
            outputs.append(run("release", "logs", "--env", "production"))
        finally:
            site.shutdown()

        notices = [str(r.body) for r in webhooks.received]
        mails = [m.message.as_string() for m in smtp.mails]
    assert {r.vendor for r in webhooks.received} == {"slack", "teams", "discord"}
    assert mails and all(m.authenticated and m.tls for m in smtp.mails)  # the password was used

    leaked = {f"output {i}": _leaks(text) for i, text in enumerate(outputs)}
    leaked |= {f"webhook notice {i}": _leaks(text) for i, text in enumerate(notices)}
    leaked |= {f"mail {i}": _leaks(text) for i, text in enumerate(mails)}
    allowed = {site.base / "dhash-environments.toml"}
    scanned = 0
    held: set[str] = set()
    for path in _text_files(site.base):
        if path in allowed or path.suffix in (".whl", ".pyc"):
            continue
        for member, data in _contents(path):
            scanned += 1
            found = _leaks(data.decode("utf-8", "replace"))
            if found and path.parent.name == "programs" and set(found) <= SERVICE_NEEDS:
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path  # it must hold them
                held.update(found)
                continue
            leaked[f"{path.relative_to(site.base)}{member}"] = found
    assert scanned > 5
    monitor_files = {p.suffix for p in (site.base / "logs").glob("monitor_production_*")}
    assert {".jsonl", ".html", ".log"} <= monitor_files, monitor_files  # the scan covered them
    assert held == SERVICE_NEEDS  # the scan does see a secret where one must be
    assert {where: names for where, names in leaked.items() if names} == {}
