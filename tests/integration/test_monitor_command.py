"""`dhash monitor` by hand: observing with ``--rollback`` on a real faulty service uses the
rollback call site once and marks the report; a deploy's guard is never taken over from a
process that holds the lock (exit 3). (Resuming a deploy's guard end to end:
tests/integration/test_deploy_guarded.py.)"""

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


def test_observing_with_rollback_rolls_back_once_and_marks_the_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, str]] = []

    def rollback(environment: str, *, reason: str, monitor_run_id: str) -> RollbackOutcome:
        calls.append((environment, reason))
        return RollbackOutcome(True, "rollback-1", "rolled back to the previous release")

    monkeypatch.setattr(command, "ROLLBACK_ACTION", rollback)
    args = [
        "monitor", "--env", "production", "--time-scale", "120", "--duration", "10",
        "--config", str(gates_file(tmp_path)), "--rollback",
    ]  # fmt: skip
    with service(tmp_path, health_failing="true") as served:
        _environment(tmp_path, served.port)
        monkeypatch.chdir(tmp_path)
        journal = Journal.for_root(load_environment("production").root)
        # A finished deploy: its guard concluded, so this run only observes (and, told
        # --rollback, acts on a violation).
        journal.append("deploy-t1", "run", "started", {"kind": "deploy", "version": __version__})
        journal.append("deploy-t1", "activate", "done")
        journal.append("deploy-t1", "run", "done")
        code = main(args)
        out = capsys.readouterr().out
        assert code == 1, out
        assert "observing, rolling back on a violation" in out
    assert len(calls) == 1 and calls[0][0] == "production" and "healthFailures" in calls[0][1]
    assert "rollback: done" in out
    report = next((tmp_path / "logs").glob("monitor_production_*.html")).read_text()
    assert 'class="rollback"' in report and "Verdict: FAILED" in report
    ledger = next((tmp_path / "logs").glob("monitor_production_*[0-9].jsonl")).read_text()
    assert "deploy-t1" not in ledger  # its own ledger, never the deploy's


def test_a_deploy_whose_controller_holds_the_lock_is_not_taken_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _environment(tmp_path, 9)
    monkeypatch.chdir(tmp_path)
    env = load_environment("production")
    journal = Journal.for_root(env.root)
    journal.append("deploy-t2", "run", "started", {"kind": "deploy", "version": "2.0.0"})
    journal.append("deploy-t2", "activate", "done")  # switched now, still watching
    with hold_lock(lock_path(env), "deploy"):
        code = main(["monitor", "--env", "production", "--config", str(gates_file(tmp_path))])
    assert code == 3
    run = journal.run("deploy-t2")
    assert run is not None and not run.finished  # left to the controller that holds it
