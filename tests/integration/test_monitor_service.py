"""The monitor against a real `dhash serve` under real traffic, time-scaled (seconds each).

Each bad release really is bad (the service's fault-injection settings): the matching gate
fails within the promised polls, the ledger holds the evidence and the report is written; the
same traffic on a healthy release passes; a dead metrics source fails after the error limit;
no traffic follows the no-data policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from dhash_rollout.monitor.ledger import LedgerFiles, read_rows
from dhash_rollout.monitor.sources import ScrapeSource
from dhash_rollout.notify.model import Severity
from dhash_rollout.runs.monitoring import Verdict
from tests.integration.monitor_support import gates_file, poll_statuses, service, watch
from tests.support.live_server import ServeProcess, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    """One healthy release for the tests that do not need a fault (starting one takes seconds)."""
    with service(tmp_path_factory.mktemp("healthy")) as served:
        yield served


def _fired_within_two_polls_of_the_breach(statuses: list[str]) -> None:
    """The first breach is followed by the failure at once (sustained = the next poll)."""
    assert statuses[-1] == "fail"
    first_breach = next(i for i, s in enumerate(statuses) if s in ("breach", "fail"))
    assert len(statuses) - 1 - first_breach <= 1, statuses


@pytest.mark.parametrize(
    ("fault", "gate"),
    [
        ({"extraction_failure_share": "0.5"}, "extractionFailureRate"),
        ({"hash_latency_seconds": "0.4"}, "p95HashTime"),
        ({"health_failing": "true"}, "healthFailures"),
        ({"low_confidence": "true"}, "lowConfidenceQueue"),
    ],
    ids=["failure-share", "hash-latency", "health", "low-confidence"],
)
def test_a_really_bad_release_fails_its_gate(
    tmp_path: Path, fault: dict[str, str], gate: str
) -> None:
    with service(tmp_path, **fault) as served:
        result, events, _seconds = watch(served, tmp_path, gates_file(tmp_path))
    assert result.verdict is Verdict.FAILED, result.reason
    assert result.failed_gate == gate
    statuses = poll_statuses(result, gate)
    if gate == "healthFailures":  # 1 non-OK check, 2 (> warn 1), 3 (> threshold 2)
        assert statuses == ["ok", "warn", "fail"]
    else:
        _fired_within_two_polls_of_the_breach(statuses)
    evidence = {e.gate: e for e in result.evidence}[gate]
    assert evidence.value is not None and evidence.value > evidence.threshold
    assert evidence.status == "fail" and evidence.samples >= 1
    assert result.report_path is not None and result.report_path.exists()
    page = result.report_path.read_text()
    assert (
        "Verdict: FAILED" in page
        and 'class="violation"' in page
        and "<script" not in page
        and "://" not in page  # self-contained: nothing loaded from anywhere
    )
    assert "monitor.verdict" in events.records
    assert Severity.WARN in [s for s, _ in events.notices] or gate == "healthFailures"


def test_the_same_traffic_on_a_healthy_release_passes(
    healthy: ServeProcess, tmp_path: Path
) -> None:
    result, _events, seconds = watch(healthy, tmp_path, gates_file(tmp_path))
    assert result.verdict is Verdict.PASSED, result.reason
    assert seconds < 15  # 10 nominal minutes at x120: 5 s, and the polls' own time
    ledger = read_rows(result.ledger_path) if result.ledger_path else []
    polls = [r for r in ledger if r["kind"] == "poll"]
    assert len(polls) == 13  # 10 at 30 s, 7 and 9 min, and the end (scaled by 120)
    last = {ev["gate"]: ev for ev in polls[-1]["evaluations"]}
    assert last["extractionFailureRate"]["value"] == 0.0
    assert last["p95HashTime"]["samples"] >= 10 and last["p95HashTime"]["value"] < 250
    log = LedgerFiles(result.ledger_path.parent, result.ledger_path.stem).log  # type: ignore[union-attr]
    assert len(log.read_text().splitlines()) >= 13


def test_a_dead_metrics_source_fails_after_the_error_limit(
    healthy: ServeProcess, tmp_path: Path
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result, _events, _s = watch(
        healthy, tmp_path, gates_file(tmp_path), source=lambda r, f: ScrapeSource(dead)
    )
    assert result.verdict is Verdict.FAILED
    assert poll_statuses(result, "extractionFailureRate") == ["error"] * 4 + ["fail"]
    assert poll_statuses(result, "healthFailures") == ["ok"] * 5  # the service itself is fine


@pytest.mark.parametrize(
    ("policy", "verdict"),
    [("inconclusive", Verdict.INCONCLUSIVE), ("ignore", Verdict.PASSED)],
)
def test_no_traffic_follows_the_no_data_policy(
    healthy: ServeProcess, tmp_path: Path, policy: str, verdict: Verdict
) -> None:
    gates = gates_file(
        tmp_path, extractionFailureRate={"noData": policy}, p95HashTime={"noData": policy}
    )
    result, _events, _s = watch(healthy, tmp_path, gates, traffic=False, duration_s=120)
    assert result.verdict is verdict, result.reason
    if verdict is Verdict.INCONCLUSIVE:
        assert "extractionFailureRate" in result.reason and "p95HashTime" in result.reason


def test_no_traffic_with_a_fail_policy_fails(healthy: ServeProcess, tmp_path: Path) -> None:
    gates = gates_file(tmp_path, extractionFailureRate={"noData": "fail"})
    result, _events, _s = watch(healthy, tmp_path, gates, traffic=False, duration_s=120)
    assert result.verdict is Verdict.FAILED and result.failed_gate == "extractionFailureRate"
    assert poll_statuses(result, "extractionFailureRate") == ["breach", "fail"]
