"""GateMonitor on a fake clock: the guide's 60-minute schedule, verdicts, resume, stop, WARN.

The metric source is scripted here (the sources themselves are tested against a real service in
tests/integration/test_monitor_*.py); ``/health`` is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from pytest_httpserver import HTTPServer

from dhash_rollout.monitor.gates import Measurement
from dhash_rollout.monitor.ledger import LedgerFiles, read_rows
from dhash_rollout.monitor.runner import GateMonitor
from dhash_rollout.monitor.sources import MetricSource, dependency_failure, probe_health
from dhash_rollout.notify.model import Severity
from dhash_rollout.runs.monitoring import MonitorRequest, Verdict

REPO = Path(__file__).resolve().parents[2]
GATES = REPO / "quality-gates-config.json"
T0 = 1_800_000_000.0


class FakeClock:
    def __init__(self, now: float) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += max(seconds, 0.0)


@dataclass
class Events:
    stop_after: int | None = None
    records: list[tuple[str, Mapping[str, object]]] = field(default_factory=list)
    notices: list[tuple[Severity, str]] = field(default_factory=list)
    polls_seen: Callable[[], int] = lambda: 0

    def record(self, event: str, data: Mapping[str, object]) -> None:
        self.records.append((event, data))

    def notify(self, severity: Severity, title: str, message: str) -> None:
        self.notices.append((severity, title))

    def stop_requested(self) -> bool:
        return self.stop_after is not None and self.polls_seen() >= self.stop_after


class Scripted:
    """A source whose P95 follows ``p95(poll)``; the others stay healthy."""

    name = "scripted"

    def __init__(self, p95: Callable[[int], float]) -> None:
        self.p95 = p95
        self.collects: list[float] = []

    def collect(self, at: float) -> str | None:
        self.collects.append(at)
        return None

    def failure_rate(self, start: float, end: float) -> Measurement:
        return Measurement(0.5, samples=100, window_s=end - start)

    def hash_p95_ms(self, start: float, end: float) -> Measurement:
        return Measurement(self.p95(len(self.collects) - 1), samples=100, window_s=end - start)

    def queue_length(self, at: float) -> Measurement:
        return Measurement(3.0, samples=1)

    def close(self) -> None:
        pass


@pytest.fixture
def health(httpserver: HTTPServer) -> Iterator[str]:
    httpserver.expect_request("/health").respond_with_json({"status": "ok"})
    yield httpserver.url_for("").rstrip("/")


def request(base_url: str, tmp: Path, run_id: str = "deploy-1") -> MonitorRequest:
    return MonitorRequest(environment="production", version="1.2.0", previous_version="1.1.0",
                          base_url=base_url, window_start=T0, run_id=run_id, log_dir=tmp,
                          gates_file=GATES)  # fmt: skip


def monitor_with(source: MetricSource) -> GateMonitor:
    return GateMonitor(source=lambda _r, _f: source, view="quiet")


def polls(ledger: Path) -> list[dict[str, object]]:
    return [r for r in read_rows(ledger) if r["kind"] == "poll"]


def test_the_60_minute_schedule_polls_exactly_when_the_guide_says(
    health: str, tmp_path: Path
) -> None:
    source = Scripted(lambda _n: 800.0)
    result = monitor_with(source).watch(request(health, tmp_path), Events(), FakeClock(T0))
    assert result.verdict is Verdict.PASSED
    times = [float(p["at"]) - T0 for p in polls(result.ledger_path)]  # type: ignore[arg-type]
    assert times == [
        *(30.0 * k for k in range(1, 11)),
        *(300.0 + 120 * k for k in range(1, 28)),
        3600.0,
    ]
    assert result.polls == 38 and result.report_path is not None and result.report_path.exists()
    # the file's proxyErrorRate is a fleet's: a source without a proxy does not evaluate it
    # (and the verdict is not inconclusive for a gate it cannot read)
    assert "proxyErrorRate" not in _gates_seen(result.ledger_path)  # type: ignore[arg-type]
    assert len({e.gate for e in result.evidence}) == 4
    assert LedgerFiles(tmp_path, "monitor_production_20270115_080000").log.exists()


def test_a_sustained_breach_fails_at_its_second_poll_with_the_evidence(
    health: str, tmp_path: Path
) -> None:
    source = Scripted(lambda n: 2600.0 if n >= 12 else 900.0)  # bad from the 12th poll on
    events = Events()
    result = monitor_with(source).watch(request(health, tmp_path), events, FakeClock(T0))
    assert result.verdict is Verdict.FAILED and result.failed_gate == "p95HashTime"
    assert result.polls == 13  # breach at poll 12, sustained at poll 13: within two polls
    evidence = {e.gate: e for e in result.evidence}["p95HashTime"]
    assert (evidence.value, evidence.threshold, evidence.samples) == (2600.0, 2000.0, 100)
    assert evidence.window_s == pytest.approx(660.0)  # poll 13 at t+660 s: never before the switch
    assert [sev for sev, _ in events.notices] == [Severity.WARN]  # once, not per poll
    assert "monitor.verdict" in [name for name, _ in events.records]
    page = result.report_path.read_text() if result.report_path else ""
    assert "Verdict: FAILED" in page and 'class="violation"' in page and "<script" not in page


def test_one_bad_poll_is_not_a_rollback(health: str, tmp_path: Path) -> None:
    source = Scripted(lambda n: 5000.0 if n == 7 else 900.0)
    result = monitor_with(source).watch(request(health, tmp_path), Events(), FakeClock(T0))
    assert result.verdict is Verdict.PASSED


def test_a_stopped_run_resumes_the_same_window_where_it_stopped(
    health: str, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    first_source = Scripted(lambda _n: 900.0)
    ledger = tmp_path / "monitor_production_20270115_080000.jsonl"
    events = Events(stop_after=15, polls_seen=lambda: len(polls(ledger)) if ledger.exists() else 0)
    result = monitor_with(first_source).watch(request(health, tmp_path), events, clock)
    assert result.verdict is Verdict.INTERRUPTED and result.polls == 15
    clock.t += 400  # the controller was away for 400 s: two polls were missed
    again = monitor_with(Scripted(lambda _n: 900.0)).watch(
        request(health, tmp_path), Events(), clock
    )
    assert again.verdict is Verdict.PASSED
    offsets = [float(p["offset"]) for p in polls(ledger)]  # type: ignore[arg-type]
    assert offsets == sorted(set(offsets)) and offsets[-1] == 3600.0
    assert len(offsets) == 38 - 2 + 1 - 1  # the missed ones folded into one catch-up poll
    rerun = monitor_with(Scripted(lambda _n: 0.0)).watch(request(health, tmp_path), Events(), clock)
    assert rerun.verdict is Verdict.PASSED and len(polls(ledger)) == len(offsets)  # no re-poll


def test_a_ledger_of_another_run_is_never_continued(health: str, tmp_path: Path) -> None:
    monitor_with(Scripted(lambda _n: 900.0)).watch(
        request(health, tmp_path), Events(), FakeClock(T0)
    )
    other = monitor_with(Scripted(lambda _n: 900.0)).watch(
        request(health, tmp_path, run_id="deploy-2"), Events(), FakeClock(T0)
    )
    assert other.ledger_path is not None and other.ledger_path.name.endswith("_1.jsonl")
    start = json.loads(other.ledger_path.read_text().splitlines()[0])
    assert start["run_id"] == "deploy-2"


def test_health_failing_for_three_polls_fails_the_health_gate(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    httpserver.expect_request("/health").respond_with_data("down", status=503)
    source = Scripted(lambda _n: 900.0)
    url = httpserver.url_for("").rstrip("/")
    result = monitor_with(source).watch(request(url, tmp_path), Events(), FakeClock(T0))
    assert result.verdict is Verdict.FAILED and result.failed_gate == "healthFailures"
    assert result.polls == 3


@pytest.mark.parametrize(
    ("ready", "broken"),
    [
        ({"ready": False, "checks": {"store": "unreachable: OperationalError"}},
         "store: unreachable: OperationalError"),
        ({"ready": False, "checks": {"store": "ok", "shutdown": "draining"}}, None),
        ({"ready": False, "checks": {"store": "ok", "admission": "saturated"}}, None),
        ({"ready": False, "checks": {"store": "ok", "index": "loading"}}, None),
        ({"ready": False, "checks": {"store": "not started"}}, "store: not started"),
        (None, None),
        ("not json", None),
        ({"checks": ["store"]}, None),
    ],
)  # fmt: skip
def test_the_health_gate_counts_an_unreachable_store_not_a_busy_or_draining_worker(
    ready: object, broken: str | None
) -> None:
    assert dependency_failure(ready) == broken


def test_a_live_process_whose_store_is_down_is_a_failed_health_check(
    httpserver: HTTPServer,
) -> None:
    httpserver.expect_request("/health").respond_with_json({"status": "ok"})
    httpserver.expect_request("/ready").respond_with_json(
        {"ready": False, "checks": {"store": "unreachable: OperationalError"}}, status=503
    )
    with httpx.Client(timeout=5) as client:
        seen = probe_health(client, httpserver.url_for("/"))
    assert seen.value == 1.0 and "store: unreachable" in (seen.detail or "")


class ScriptedFleet(Scripted):
    """A fleet's source that also reads its proxy: the 5xx share follows ``proxy(poll)``."""

    name = "scripted-fleet"

    def __init__(self, proxy: Callable[[int], float]) -> None:
        super().__init__(lambda _n: 800.0)
        self.proxy = proxy

    def proxy_error_rate(self, start: float, end: float) -> Measurement:
        return Measurement(self.proxy(len(self.collects) - 1), samples=200, window_s=end - start)


def _gates_seen(ledger: Path) -> set[object]:
    return {e["gate"] for p in polls(ledger) for e in p["evaluations"]}  # type: ignore[attr-defined]


def test_the_proxy_gate_fails_a_fleet_whose_clients_get_5xx(health: str, tmp_path: Path) -> None:
    source = ScriptedFleet(lambda n: 9.0 if n >= 4 else 0.0)  # the hosts' own gates stay fine
    result = monitor_with(source).watch(request(health, tmp_path), Events(), FakeClock(T0))
    assert result.verdict is Verdict.FAILED and result.failed_gate == "proxyErrorRate"
    assert result.polls == 5  # breach at poll 4, sustained at poll 5
    assert "proxyErrorRate" in _gates_seen(result.ledger_path)  # type: ignore[arg-type]
