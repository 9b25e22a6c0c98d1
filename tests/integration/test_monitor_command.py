"""`dhash monitor` guarding a deploy: a real faulty service, the rollback call site used once,
the report marked; and exit 3 when a deploy or rollback holds the environment's lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.cli import main
from dhash_rollout.commands import monitor as command
from dhash_rollout.deploy import lock_path
from dhash_rollout.environments import load_environment
from dhash_rollout.locking import hold_lock
from dhash_rollout.monitor.guard import RollbackOutcome
from tests.integration.monitor_support import gates_file, service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _environment(tmp: Path, port: int) -> None:
    (tmp / "dhash-environments.toml").write_text(
        f'[production]\nport = {port}\nroot = "var/production"\nchannels = ["file"]\n'
    )


def test_guarding_a_deploy_rolls_back_once_and_marks_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, str]] = []

    def rollback(environment: str, *, reason: str, monitor_run_id: str) -> RollbackOutcome:
        calls.append((environment, reason))
        return RollbackOutcome(True, "rollback-1", "rolled back to the previous release")

    monkeypatch.setattr(command, "ROLLBACK_ACTION", rollback)
    with service(tmp_path, health_failing="true") as served:
        _environment(tmp_path, served.port)
        monkeypatch.chdir(tmp_path)
        code = main(
            [
                "monitor",
                "--env",
                "production",
                "--rollback",
                "--time-scale",
                "120",
                "--duration",
                "10",
                "--config",
                str(gates_file(tmp_path)),
            ]
        )
    out = capsys.readouterr().out
    assert code == 1, out
    assert calls == [("production", calls[0][1])] and "healthFailures" in calls[0][1]
    assert "rollback: done" in out
    report = next((tmp_path / "logs").glob("monitor_production_*.html")).read_text()
    assert 'class="rollback"' in report and "Verdict: FAILED" in report


def test_a_held_lock_is_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _environment(tmp_path, 9)
    monkeypatch.chdir(tmp_path)
    with hold_lock(lock_path(load_environment("production")), "deploy"):
        code = main(
            ["monitor", "--env", "production", "--rollback", "--config", str(gates_file(tmp_path))]
        )
    assert code == 3
