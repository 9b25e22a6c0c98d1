"""Smoke tests, logging validation and the daily check against real services on 127.0.0.1:
``dhash serve`` in a production-like layout, and the app under uvicorn for a misconfigured one."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from dhash_rollout.backup import create_backup
from dhash_rollout.checks.daily import run_daily
from dhash_rollout.checks.known_image import KNOWN_DHASH64
from dhash_rollout.checks.report import read_log_summary
from dhash_rollout.checks.smoke import SMOKE_SOURCE, run_smoke
from dhash_rollout.environments import Environment, load_environment
from dhash_service.api.app import create_app
from dhash_service.client import DhashClient
from dhash_service.config import Settings
from tests.support.live_server import DHASH, ServeProcess, dhash_serve, free_port, running_app

TOKEN = "smoke-token-5d1e9f0c2a7b"


@dataclass
class Deployed:
    workdir: Path
    root: Path
    server: ServeProcess


def _start(base: Path, **settings: str) -> Iterator[Deployed]:
    """A production-like layout: ``<root>/shared/{data,logs}``, the service logging to
    ``shared/logs/blue.log`` as the local target arranges it, and a workdir with the
    environments file naming it."""
    root = base / "var" / "production"
    shared = root / "shared"
    (shared / "logs").mkdir(parents=True)
    (shared / "data").mkdir()
    values = {
        "DHASH_DATABASE_URL": f"sqlite:///{shared / 'data' / 'dhash.sqlite3'}",
        "DHASH_AUTO_MIGRATE": "true",
        "DHASH_API_TOKENS": TOKEN,
        **settings,
    }
    with dhash_serve(values, shared, name="logs/blue") as server:
        workdir = base / "work"
        workdir.mkdir()
        _environments(workdir, root, server.port)
        yield Deployed(workdir, root, server)


def _environments(workdir: Path, root: Path, port: int, **extra: str) -> None:
    lines = ["[production]", f'root = "{root}"', f"port = {port}", f'api_token = "{TOKEN}"']
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    (workdir / "dhash-environments.toml").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    yield from _start(tmp_path_factory.mktemp("deployed"))


def dhash(workdir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    return subprocess.run(
        [DHASH, *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_smoke_passes_against_a_running_service_and_logs_each_check(deployed: Deployed) -> None:
    done = dhash(deployed.workdir, "smoke", "--env", "production", "--timeout", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    log = deployed.workdir / "postdeploy-smoketests.log"
    summary = read_log_summary(log)
    assert summary.ok and summary.run == "smoke" and summary.meta["env"] == "production"
    records = [json.loads(line) for line in log.read_text().splitlines()[:-1]]
    assert [r["name"] for r in records] == [
        "ready",
        "health",
        "metrics",
        "known hash",
        "ingest and match",
        "review queue",
    ]
    assert all(r["ok"] for r in records)
    assert f"{KNOWN_DHASH64} (dhash64) as expected" in log.read_text()
    assert "FAIL" not in done.stdout


def test_repeated_smoke_runs_store_the_known_image_once_under_its_own_source(
    deployed: Deployed,
) -> None:
    env = load_environment("production", deployed.workdir)
    assert run_smoke(env, timeout=30).ok
    done = dhash(deployed.workdir, "smoke", "--env", "production", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is True
    assert "(already stored)" in report["results"][4]["detail"]
    with DhashClient(deployed.server.url, token=TOKEN) as client:
        matches = client.search(KNOWN_DHASH64, radius=0)
    assert [m.source for m in matches] == [SMOKE_SOURCE]


def test_smoke_against_a_stopped_service_fails_clearly_without_a_traceback(
    tmp_path: Path,
) -> None:
    _environments(tmp_path, tmp_path / "var" / "production", free_port())
    done = dhash(tmp_path, "smoke", "--env", "production", "--timeout", "2")
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert "dhash: error: smoke (production) failed: ready: not ready within the deadline" in (
        done.stderr
    )
    assert "cannot reach http://127.0.0.1:" in done.stderr
    summary = read_log_summary(tmp_path / "postdeploy-smoketests.log")
    assert not summary.ok
    assert summary.meta["failed"][:2] == ["ready", "health"]


def test_validate_logging_of_an_environment_never_deployed_says_what_to_check(
    tmp_path: Path,
) -> None:
    _environments(tmp_path, tmp_path / "var" / "production", free_port())
    done = dhash(tmp_path, "validate-logging", "--env", "production", "--concurrency", "1")
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    assert "does not exist: was production deployed?" in done.stderr
    assert "dhash release status --env production" in done.stderr


def test_post_rollback_smoke_needs_a_recorded_rollback(deployed: Deployed) -> None:
    log = deployed.workdir / "postrollback.log"
    done = dhash(
        deployed.workdir, "smoke", "--env", "production", "--post-rollback", "--log", str(log)
    )
    assert done.returncode == 1
    assert "rolled-back release: no rollback recorded in" in done.stderr
    assert "after a deploy run the smoke tests without it" in done.stderr
    assert read_log_summary(log).meta["failed"] == ["rolled-back release"]


def test_smoke_fails_a_service_that_hashes_differently(tmp_path: Path) -> None:
    """The same service code configured for 256-bit hashes: the known-hash check must catch it."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'dhash.sqlite3'}",
        data_dir=tmp_path,
        auto_migrate=True,
        hash_algorithm="dhash256",
        hash_size=16,
        api_tokens=[TOKEN],
    )
    with running_app(create_app(settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        env = Environment("production", tmp_path, port, url, settings.effective_database_url)
        report = run_smoke(replace(env, api_token=TOKEN), timeout=30)
    results = {r.name: r for r in report.results}
    assert not report.ok
    assert results["ready"].ok and results["health"].ok
    assert not results["known hash"].ok
    assert f"expected {KNOWN_DHASH64}" in results["known hash"].detail


def test_validate_logging_passes_on_the_services_json_logs(deployed: Deployed) -> None:
    done = dhash(deployed.workdir, "validate-logging", "--env", "production", "--concurrency", "5")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = read_log_summary(deployed.workdir / "test_logging.log")
    assert summary.ok and summary.run == "validate-logging"
    assert summary.meta["concurrency"] == 5
    text = (deployed.workdir / "test_logging.log").read_text()
    assert "all 20 requests logged with their request id" in text
    # The token was sent with every authorised request and must be nowhere in the service log.
    assert TOKEN not in (deployed.root / "shared" / "logs" / "blue.log").read_text()


def test_validate_logging_fails_when_the_requests_are_not_in_the_log(
    deployed: Deployed, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "empty-logs"
    elsewhere.mkdir()
    _environments(tmp_path, deployed.root, deployed.server.port, service_log_dir=str(elsewhere))
    done = dhash(tmp_path, "validate-logging", "--env", "production", "--concurrency", "2")
    assert done.returncode == 1
    assert "the service logged nothing for the requests" in done.stderr
    assert "requests not found in the log by X-Request-ID" in done.stderr
    assert "Traceback" not in done.stderr


def test_daily_check_passes_health_and_backup_and_names_a_hand_started_listener(
    deployed: Deployed,
) -> None:
    """The fixture's service is a hand-started ``dhash serve`` on the environment's port, not a
    slot the environment runs: the daily check says so (issue 12 item 4), the rest passes."""
    env = load_environment("production", deployed.workdir)
    create_backup(env, deployed.workdir / "backups")
    done = dhash(deployed.workdir, "check", "daily", "--json")
    assert done.returncode == 1, done.stdout + done.stderr
    results = {r["name"]: r for r in json.loads(done.stdout)["results"]}
    failed = {name for name, r in results.items() if not r["ok"]}
    assert failed == {"who listens on the port"}, results
    port = results["who listens on the port"]["detail"]
    assert f"foreign pid {deployed.server.process.pid}" in port, port
    assert results["service health"]["detail"] == f"{deployed.server.url}/health is OK"
    assert results["latest backup age"]["detail"].startswith(
        "backup age: 0 hours (dhash_production_"
    )
    disk = results["disk space"]["detail"]
    assert "logs/ " in disk and "backups/ " in disk


def test_daily_check_names_a_down_service_and_a_stale_backup(
    deployed: Deployed, tmp_path: Path
) -> None:
    _environments(tmp_path, deployed.root, free_port())
    env = load_environment("production", tmp_path)
    stale = datetime.now(UTC) - timedelta(hours=30)
    create_backup(env, tmp_path / "backups", clock=lambda: stale)
    report = run_daily(env, workdir=tmp_path)
    failed = {r.name: r.detail for r in report.failures}
    assert set(failed) == {"service health", "latest backup age"}
    assert failed["service health"].startswith("cannot reach http://127.0.0.1:")
    assert failed["latest backup age"].endswith(
        " is 30 hours old (over 24; make one: ./scripts/backup_dhash.sh --env production)"
    )
