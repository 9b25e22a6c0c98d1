"""`dhash monitor` guarding a deploy: a real faulty service, the rollback call site used once,
the report marked; and exit 3 when a deploy or rollback holds the environment's lock."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.cli import main
from dhash_rollout.commands import monitor as command
from dhash_rollout.environments import load_environment
from dhash_rollout.monitor.guard import RollbackOutcome
from dhash_rollout.runs.journal import Journal
from dhash_rollout.runs.locking import hold_lock
from dhash_rollout.runs.paths import lock_path
from dhash_service import __version__
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
    args = [
        "monitor",
        "--env",
        "production",
        "--time-scale",
        "120",
        "--duration",
        "10",
        "--config",
        str(gates_file(tmp_path)),
    ]
    with service(tmp_path, health_failing="true") as served:
        _environment(tmp_path, served.port)
        monkeypatch.chdir(tmp_path)
        journal = Journal.for_root(load_environment("production").root)
        journal.append("deploy-t1", "run", "started", {"kind": "deploy", "version": __version__})
        journal.append("deploy-t1", "activate", "done")  # the switch: now
        journal.append("deploy-t1", "run", "done")
        code = main(args)
        out = capsys.readouterr().out
        assert code == 1, out
        assert "guarding the deploy" in out
        # A re-run inside the window resumes the same guard: its verdict and its rollback are
        # in the ledger, so it reports them and never acts twice.
        assert main(args) == 1
        assert "rollback: done: already" in capsys.readouterr().out
    assert len(calls) == 1 and calls[0][0] == "production" and "healthFailures" in calls[0][1]
    assert "rollback: done" in out
    report = next((tmp_path / "logs").glob("monitor_production_*.html")).read_text()
    assert 'class="rollback"' in report and "Verdict: FAILED" in report
    assert len(calls) == 1


def test_a_held_lock_is_exit_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _environment(tmp_path, 9)
    monkeypatch.chdir(tmp_path)
    with hold_lock(lock_path(load_environment("production")), "deploy"):
        code = main(
            ["monitor", "--env", "production", "--rollback", "--config", str(gates_file(tmp_path))]
        )
    assert code == 3
