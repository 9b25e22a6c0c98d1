"""Was the last deploy verified? The rule behind ``release status`` and ``check daily``, over
the journal's view of the run (case table)."""

from __future__ import annotations

import pytest

from dhash_rollout.runs.journal import PhaseState, RunState, Status
from dhash_rollout.runs.monitoring import CUT_SHORT
from dhash_rollout.runs.verification import describe


def _run(monitor: PhaseState | None, outcome: Status | None = "done") -> RunState:
    phases = {"activate": PhaseState("done", {})}
    if monitor is not None:
        phases["monitor"] = monitor
    params = {"version": "2.0.0", "env": "production"}
    return RunState("deploy-1", "deploy", params, phases, outcome)


def _verdict(verdict: str, reason: str = "") -> PhaseState:
    return PhaseState("done", {"verdict": verdict, "reason": reason, "polls": 38})


WATCHING = PhaseState("started", {"monitor.started": {"window_end": 1.0}})
CUT = _verdict("inconclusive", f"{CUT_SHORT}: no monitor ran from t+600s to the end")


@pytest.mark.parametrize(
    ("run", "alive", "state", "says"),
    [
        (_run(_verdict("passed")), False, "verified", "verified, quality gates passed (38 polls)"),
        (_run(PhaseState("skipped", {"reason": "--no-monitor"})), False, "unmonitored",
         "not monitored (--no-monitor) — not verified"),
        (_run(WATCHING, None), True, "watching", "monitoring in progress"),
        (_run(WATCHING, None), False, "interrupted",
         f"{CUT_SHORT} (resume: dhash monitor --env production)"),
        (_run(CUT), False, "interrupted", CUT_SHORT),
        (_run(_verdict("inconclusive", "no data at the end for p95HashTime")), False,
         "inconclusive", "monitoring inconclusive (no data at the end for p95HashTime)"),
        (_run(PhaseState("failed", {"verdict": "failed", "reason": "p95HashTime = 900 > 250"}),
              "failed"), False, "failed", "quality gates failed (p95HashTime = 900 > 250)"),
        (_run(None, None), False, "interrupted", CUT_SHORT),  # died after the switch
        (RunState("deploy-1", "deploy", {"version": "2.0.0"},
                  {"migrate": PhaseState("started", {})}, None), False, "none",
         "interrupted in migrate — not verified"),
        (None, False, "none", "no deploy in the journal"),
    ],
)  # fmt: skip
def test_only_a_window_watched_to_its_end_with_every_gate_passing_is_verified(
    run: RunState | None, alive: bool, state: str, says: str
) -> None:
    found = describe(run, monitor_alive=alive)
    assert found.state == state
    assert says in found.line
    assert found.verified is (state == "verified")
