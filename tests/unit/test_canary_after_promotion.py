"""After the switch, a promoted canary is watched by the deploy's monitor phase and acted on
like a deploy: PASSED/INCONCLUSIVE close the run, FAILED runs the injected rollback inside the
canary's run (under its lock), INTERRUPTED closes the run and names `dhash monitor`. The monitor
and the rollback are small objects at their typed seams (runs/monitoring, runs/recovery), as in
tests/integration/test_deploy_monitor_verdicts.py; the journal, the state file, the run context
and the environment are real (a temp directory)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dhash_rollout.canary.controller import CanaryRun, CanaryState, read_state
from dhash_rollout.canary.judge import JudgeConfig
from dhash_rollout.environments import load_environment
from dhash_rollout.runs.context import RunContext
from dhash_rollout.runs.journal import Journal
from dhash_rollout.runs.monitoring import (
    Clock,
    MonitorEvents,
    MonitorRequest,
    MonitorResult,
    Verdict,
)
from dhash_rollout.runs.recovery import RollbackOutcome, Trigger
from dhash_rollout.runs.runlog import open_run_log
from dhash_rollout.targets.local import LocalTarget


@dataclass
class FixedMonitor:
    verdict: Verdict
    requests: list[MonitorRequest] = field(default_factory=list)

    def watch(self, request: MonitorRequest, events: MonitorEvents, clock: Clock) -> MonitorResult:
        self.requests.append(request)
        events.record("poll", {"gate": "lowConfidenceQueue", "value": 12})
        failed = "lowConfidenceQueue" if self.verdict is Verdict.FAILED else None
        return MonitorResult(self.verdict, f"fixed {self.verdict}", failed_gate=failed, polls=3)


@dataclass
class RecordingRollback:
    ok: bool
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def __call__(self, ctx: RunContext, *, trigger: Trigger, reason: str) -> RollbackOutcome:
        self.calls.append((ctx.run_id, trigger, reason))
        if self.ok:
            return RollbackOutcome("rollback-1", True, None, "rolled back to 1.0.0 (rollback-1)")
        return RollbackOutcome("rollback-1", False, "boom", "ROLLBACK FAILED: boom")


@pytest.fixture
def ctx(tmp_path: Path) -> Iterator[RunContext]:
    (tmp_path / "dhash-environments.toml").write_text(
        f'[production]\nroot = "{tmp_path / "var"}"\n', encoding="utf-8"
    )
    env = load_environment("production", tmp_path)
    _path, handle, logger = open_run_log(tmp_path / "logs", "canary", env.name)
    with handle:
        run = RunContext(
            "canary", env, LocalTarget(env), Journal.for_root(env.root), "canary-1", tmp_path,
            tmp_path / "logs", tmp_path / "backups", logger, lambda _m: None,
        )  # fmt: skip
        run.start({"version": "2.0.0", "from_version": "1.0.0"})
        yield run


def _watch(ctx: RunContext, verdict: Verdict, rollback: RecordingRollback) -> list[tuple[str, ...]]:
    notices: list[tuple[str, ...]] = []
    run = CanaryRun(
        ctx,
        LocalTarget(ctx.env),
        JudgeConfig(),
        monitor=FixedMonitor(verdict),
        rollback=rollback,
        monitor_time_scale=60.0,
        notice=lambda *n: notices.append(n),
    )
    state = CanaryState("2.0.0", "1.0.0", "dhash-green", 1, 2, {"canary": [1], "stable": [0]},
                        100.0, "promoted", 0.0, run_id="canary-1")  # fmt: skip
    run._watch(state, "step 2 passed", switched_at=1000.0)
    return notices


@pytest.mark.parametrize(
    ("verdict", "rollback_ok", "status", "outcome", "severity"),
    [
        (Verdict.PASSED, True, "promoted", "done", "INFO"),
        (Verdict.INCONCLUSIVE, True, "promoted", "done", "WARN"),
        (Verdict.INTERRUPTED, True, "promoted", "done", "WARN"),
        (Verdict.FAILED, True, "rolled_back", "failed", "ERROR"),
        (Verdict.FAILED, False, "rolled_back", "failed", "CRITICAL"),
    ],
)
def test_the_monitors_verdict_after_a_promotion_is_acted_on_like_a_deploys(  # noqa: PLR0917
    ctx: RunContext,
    verdict: Verdict,
    rollback_ok: bool,
    status: str,
    outcome: str,
    severity: str,
) -> None:
    rollback = RecordingRollback(rollback_ok)
    notices = _watch(ctx, verdict, rollback)
    run = ctx.journal.run("canary-1")
    assert run is not None and run.outcome == outcome
    state = read_state(ctx.env)
    if status == "rolled_back":
        assert state is not None and state.status == "rolled_back"
        assert rollback.calls == [("canary-1", "automatic", "fixed failed")]
        assert run.status_of("monitor") == "failed"
        assert run.status_of("auto_rollback") == ("done" if rollback_ok else "failed")
    else:
        assert rollback.calls == []
        assert run.status_of("monitor") == "done"
        assert run.detail_of("monitor")["verdict"] == str(verdict)
    assert [n[1] for n in notices] == [severity]
    if verdict is Verdict.INTERRUPTED:
        assert "dhash monitor --env production" in notices[0][3]


def test_the_window_starts_at_the_switch_with_the_monitors_time_scale(ctx: RunContext) -> None:
    monitor = FixedMonitor(Verdict.PASSED)
    run = CanaryRun(ctx, LocalTarget(ctx.env), JudgeConfig(), monitor=monitor,
                    monitor_time_scale=60.0)  # fmt: skip
    state = CanaryState("2.0.0", "1.0.0", "dhash-green", 1, 2, {"canary": [1], "stable": [0]},
                        100.0, "promoted", 0.0, run_id="canary-1")  # fmt: skip
    run._watch(state, "promoted by an operator", switched_at=1234.5)
    [request] = monitor.requests
    assert (request.version, request.previous_version) == ("2.0.0", "1.0.0")
    assert (request.window_start, request.time_scale, request.run_id) == (1234.5, 60.0, "canary-1")
