"""The deploy acts on its monitor's verdict: FAILED rolls back automatically inside the deploy,
under the lock it holds; INCONCLUSIVE deploys with a WARN notice; INTERRUPTED leaves the run
open and a re-run resumes it. The monitor here is a small object at the typed seam
(:mod:`dhash_rollout.runs.monitoring`); the releases, the service and the rollback are real."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dhash_rollout.deploy import DeployRequest, DeployResult, deploy
from dhash_rollout.notify.model import Severity
from dhash_rollout.rollback import execute
from dhash_rollout.runs.context import RunContext
from dhash_rollout.runs.journal import Journal
from dhash_rollout.runs.monitoring import (
    Clock,
    MonitorEvents,
    MonitorRequest,
    MonitorResult,
    Verdict,
)
from dhash_service.errors import ConfigError
from tests.support.release_builds import wheel_for
from tests.support.rollout_site import Site, assert_fully_on

pytestmark = pytest.mark.slow


@dataclass
class FakeMonitor:
    """Returns a fixed verdict; records what the deploy gave it and what it saw meanwhile."""

    site: Site
    verdict: Verdict
    requests: list[MonitorRequest] = field(default_factory=list)
    rival_exit: int | None = None  # a rollback by another process while the window is open
    terminated: bool = False  # a real SIGTERM reaches this process while it watches

    def watch(self, request: MonitorRequest, events: MonitorEvents, clock: Clock) -> MonitorResult:
        self.requests.append(request)
        if self.terminated:  # as an operator's `kill` or a service manager's stop would
            os.kill(os.getpid(), signal.SIGTERM)
            assert events.stop_requested()  # the window ends INTERRUPTED, as the real one does
            return MonitorResult(Verdict.INTERRUPTED, "monitoring was stopped")
        events.record("poll", {"gate": "error_rate", "value": 0.2})
        events.notify(Severity.WARN, "error_rate", "0.2 over 0.05")
        rival = self.site.run("rollback", "--env", "production", "--reason", "rival")
        self.rival_exit = rival.returncode
        failed = "error_rate" if self.verdict is Verdict.FAILED else None
        return MonitorResult(self.verdict, f"fake verdict {self.verdict}", failed_gate=failed)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    site = Site.create(tmp_path_factory.mktemp("monitor-site"))
    try:
        first = site.deploy(wheel_for("1.0.0"))
        assert first.returncode == 0, first.stdout + first.stderr
        yield site
    finally:
        site.shutdown()


@pytest.fixture
def in_site(site: Site, monkeypatch: pytest.MonkeyPatch) -> Site:
    """This process deploys as ``dhash`` would from the site (its environments file)."""
    monkeypatch.setenv("DHASH_ENVIRONMENTS_FILE", str(site.base / "dhash-environments.toml"))
    monkeypatch.chdir(site.base)
    return site


def _deploy(site: Site, version: str, monitor: FakeMonitor) -> DeployResult:
    request = DeployRequest(env="production", source=str(wheel_for(version)), base=site.base)
    return deploy(request, monitor=monitor, rollback=execute)


def _notices(site: Site) -> list[dict[str, object]]:
    lines: list[dict[str, object]] = []
    for path in sorted((site.base / "logs").glob("notifications_*.log")):
        for text in path.read_text().splitlines():
            if text.strip():
                lines.append(json.loads(text)["notification"])
    return lines


def test_a_failed_verdict_rolls_back_inside_the_deploy_under_its_lock(in_site: Site) -> None:
    monitor = FakeMonitor(in_site, Verdict.FAILED)
    result = _deploy(in_site, "2.0.0", monitor)
    assert not result.ok
    assert result.error is not None and "quality gates failed" in result.error
    assert monitor.rival_exit == 3  # the lock was held while the window was open
    deployed = in_site.journal.run(str(result.run_id))
    assert deployed is not None and deployed.outcome == "failed"
    [request] = monitor.requests
    assert request.window_start == deployed.detail_of("activate")["switched_at"]
    assert (request.version, request.previous_version) == ("2.0.0", "1.0.0")
    assert deployed.detail_of("monitor")["poll"] == {"gate": "error_rate", "value": 0.2}
    rolled = deployed.detail_of("auto_rollback")
    assert deployed.status_of("auto_rollback") == "done" and rolled["ok"] is True
    child = in_site.journal.run(str(rolled["rollback_run"]))
    assert child is not None and child.outcome == "done"
    assert child.params["parent"] == result.run_id
    assert child.params["trigger"] == "automatic"
    assert child.status_of("undo") is None  # one undo: the rollback plan, not a compensation
    assert_fully_on(in_site, "1.0.0")
    kinds = [(n.get("kind"), n.get("trigger")) for n in _notices(in_site)]
    assert ("rollback", "automatic") in kinds


def test_a_deploy_that_fails_after_migrating_is_undone_by_a_rollback_plan(in_site: Site) -> None:
    request = DeployRequest(
        env="production",
        source=str(wheel_for("1.5.0", migration="reversible", broken=True)),
        base=in_site.base,
    )
    result = deploy(request, rollback=execute)
    assert not result.ok
    run = in_site.journal.run(str(result.run_id))
    assert run is not None and run.outcome == "failed"
    assert run.status_of("migrate") == "done" and run.status_of("activate") == "failed"
    assert run.status_of("undo") == "done"
    child = in_site.journal.run(str(run.detail_of("undo")["rollback_run"]))
    assert child is not None and child.outcome == "done"
    assert (child.params["parent"], child.params["trigger"]) == (result.run_id, "automatic")
    assert child.status_of("downgrade") == "done"  # the schema went back with 1.5.0's code
    assert_fully_on(in_site, "1.0.0")


def test_an_inconclusive_verdict_deploys_with_a_warning(in_site: Site) -> None:
    result = _deploy(in_site, "3.0.0", FakeMonitor(in_site, Verdict.INCONCLUSIVE))
    assert result.ok, result.error
    assert_fully_on(in_site, "3.0.0")
    run = in_site.journal.run(str(result.run_id))
    assert run is not None and run.detail_of("monitor")["verdict"] == "inconclusive"
    last = [n for n in _notices(in_site) if n.get("kind") == "success"][-1]
    assert last["severity"] == "WARN"
    assert "inconclusive" in str(last["message"])


def test_an_interrupted_window_leaves_the_run_open_and_a_rerun_resumes_it(in_site: Site) -> None:
    """A SIGTERM while the window is open is an interruption like one in any other phase
    (issue 12 item 8): journaled, "interrupted at monitor" with the next command, exit 130 —
    it read FAILED and exited 1 before (found by the interruption matrix's monitor case)."""
    stopped = _deploy(in_site, "4.0.0", FakeMonitor(in_site, Verdict.INTERRUPTED, terminated=True))
    assert not stopped.ok and stopped.interrupted
    assert stopped.error is not None and "interrupted at monitor by SIGTERM" in stopped.error
    assert "`dhash deploy --env production --version 4.0.0` resumes it" in stopped.error
    open_run = in_site.journal.last_run()
    assert open_run is not None and not open_run.finished
    assert open_run.interrupted_phase == "monitor"
    assert open_run.detail_of("interrupted")["signal"] == "SIGTERM"
    assert any(n.get("phase") == "interrupted-monitor" for n in _notices(in_site))
    resumed = _deploy(in_site, "4.0.0", FakeMonitor(in_site, Verdict.PASSED))
    assert resumed.ok, resumed.error
    assert resumed.run_id == stopped.run_id
    assert_fully_on(in_site, "4.0.0")


def test_a_rollback_inside_a_run_needs_that_run_to_hold_the_lock(in_site: Site) -> None:
    env = in_site.env
    ctx = RunContext(
        "deploy", env, in_site.target, Journal.for_root(env.root), "deploy-x", in_site.base,
        Path("logs"), Path("backups"), None, print,
    )  # fmt: skip
    with pytest.raises(ConfigError, match="lock"):
        execute(ctx, trigger="automatic", reason="no lock")
