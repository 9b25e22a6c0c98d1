"""The deploy's guard on a fake clock: the schedule starts when it starts watching (samples
count from the switch), a window that ended unwatched is never verified, the escalation runs on
its polls (throttled), and the gate summary the deploy's notice carries."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pytest_httpserver import HTTPServer

from dhash_rollout.monitor.deploy_guard import DeployGuard, gate_summary
from dhash_rollout.monitor.ledger import read_rows
from dhash_rollout.runs.monitoring import CUT_SHORT, GateEvidence, Verdict
from tests.unit.test_monitor_runner import T0, Events, FakeClock, Scripted, polls, request


def _guard(source: Scripted, calls: list[float] | None = None) -> DeployGuard:
    hook = calls.append if calls is not None else None
    return DeployGuard(source=lambda _r, _f: source, view="quiet", escalate=hook)


def _health(httpserver: HTTPServer) -> str:
    httpserver.expect_request("/health").respond_with_json({"status": "ok"})
    return httpserver.url_for("").rstrip("/")


def test_the_schedule_starts_when_watching_starts_and_samples_count_from_the_switch(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    source = Scripted(lambda _n: 900.0)
    clock = FakeClock(T0 + 45)  # health and smoke took 45 s after the switch at T0
    result = _guard(source).watch(request(_health(httpserver), tmp_path), Events(), clock)
    assert result.verdict is Verdict.PASSED and result.polls == 38
    rows = read_rows(result.ledger_path) if result.ledger_path else []
    start = rows[0]
    assert (start["window_start"], start["schedule_start"]) == (T0, T0 + 45)
    assert start["window_end"] == T0 + 45 + 3600
    times = [float(p["at"]) - T0 for p in polls(result.ledger_path)]  # type: ignore[arg-type]
    assert times[0] == 45 + 30 and times[-1] == 45 + 3600
    p95 = next(e for e in polls(result.ledger_path)[0]["evaluations"] if e["gate"] == "p95HashTime")  # type: ignore[index]
    assert p95["window_s"] == 75  # from the switch, not from the start of watching


def test_a_window_that_ended_while_no_monitor_ran_is_not_verified(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    url = _health(httpserver)
    clock = FakeClock(T0)
    ledger = tmp_path / "monitor_production_20270115_080000.jsonl"
    stop = Events(stop_after=5, polls_seen=lambda: len(polls(ledger)) if ledger.exists() else 0)
    first = _guard(Scripted(lambda _n: 900.0)).watch(request(url, tmp_path), stop, clock)
    assert first.verdict is Verdict.INTERRUPTED
    clock.t = T0 + 3600 + 1  # the controller came back after the window's end
    again = _guard(Scripted(lambda _n: 900.0)).watch(request(url, tmp_path), Events(), clock)
    assert again.verdict is Verdict.INCONCLUSIVE and again.reason.startswith(CUT_SHORT)
    assert len(polls(ledger)) == 5  # nothing measured after the fact


def test_escalation_runs_on_polls_at_most_every_30_seconds(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    calls: list[float] = []
    result = _guard(Scripted(lambda _n: 900.0), calls).watch(
        request(_health(httpserver), tmp_path), Events(), FakeClock(T0)
    )
    assert result.polls == 38
    assert [round(t - T0) for t in calls] == [30, 60, 90, 120, 150, 180, 210, 240, 270, 300,
                                              *range(420, 3600, 120), 3600]  # fmt: skip


def test_a_failing_escalation_never_stops_the_watch(httpserver: HTTPServer, tmp_path: Path) -> None:
    def broken(_at: float) -> None:
        raise RuntimeError("the notification store is gone")

    guard = DeployGuard(source=lambda _r, _f: Scripted(lambda _n: 900.0), view="quiet",
                        escalate=broken)  # fmt: skip
    result = guard.watch(request(_health(httpserver), tmp_path), Events(), FakeClock(T0))
    assert result.verdict is Verdict.PASSED and result.polls == 38


def test_the_summary_names_every_gate_with_its_value_threshold_and_samples() -> None:
    p95 = GateEvidence("p95HashTime", "ok", 41.25, 2000, warn=1500, samples=57)
    queue = GateEvidence("lowConfidenceQueue", "ok", 3, 1000)
    rate = replace(p95, gate="extractionFailureRate", status="no-data", value=None, threshold=5)
    assert gate_summary([p95, queue, rate]) == (
        "p95HashTime ok 41.25 ms (threshold 2000, 57 samples); "
        "lowConfidenceQueue ok 3 (threshold 1000); "
        "extractionFailureRate no-data no data (threshold 5, 57 samples)"
    )
