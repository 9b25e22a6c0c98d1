"""Debian's Prometheus scraping the same service under the same traffic: the prometheus source
gives the scrape source's values (float tolerance) and the same verdicts.

The values are comparable exactly because every series starts at 0 inside the window (the
window opens before the traffic): ``increase`` then extrapolates every series by the same
factor, which cancels in a ratio and in a quantile, whatever the two scrapers' timings.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from dhash_rollout.monitor.gates import GateState, Measurement, step
from dhash_rollout.monitor.gates_config import GateName, load_gates_config
from dhash_rollout.monitor.runner import prometheus_source
from dhash_rollout.monitor.sources import PrometheusSource, ScrapeSource
from dhash_rollout.runs.monitoring import Verdict
from tests.integration.monitor_support import TOKEN, gates_file, service, watch
from tests.support.load import LoadGenerator
from tests.support.prometheus_server import running_prometheus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _close(a: Measurement, b: Measurement) -> bool:
    if a.value is None or b.value is None:
        return a.value is b.value
    return math.isclose(a.value, b.value, rel_tol=1e-9, abs_tol=1e-9)


def test_prometheus_gives_the_same_values_and_verdicts_as_scrape(tmp_path: Path) -> None:
    gates_path = gates_file(tmp_path)
    gates = load_gates_config(gates_path).environments["production"]
    with (
        service(tmp_path, extraction_failure_share="0.2", hash_latency_seconds="0.02") as served,
        running_prometheus(f"127.0.0.1:{served.port}", tmp_path) as prom,
    ):
        prom.wait_scrapes(2)
        start = time.time()
        scrape = ScrapeSource(served.url)
        scrape.collect(time.time())
        time.sleep(0.6)  # both see the zero counters inside the window
        with LoadGenerator(served.port, TOKEN, threads=3, max_seconds=3, ingest_every=1):
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                scrape.collect(time.time())
                time.sleep(0.25)
        time.sleep(0.8)  # both see the final counters
        at = time.time()
        scrape.collect(at)
        other = PrometheusSource(prom.url)
        pairs = {
            GateName.EXTRACTION_FAILURE_RATE: (
                scrape.failure_rate(start, at),
                other.failure_rate(start, at),
            ),
            GateName.P95_HASH_TIME: (scrape.hash_p95_ms(start, at), other.hash_p95_ms(start, at)),
            GateName.LOW_CONFIDENCE_QUEUE: (scrape.queue_length(at), other.queue_length(at)),
        }
        for name, (ours, theirs) in pairs.items():
            assert ours.error is None and theirs.error is None, (ours, theirs)
            assert ours.value is not None, name
            assert _close(ours, theirs), (name, ours, theirs)
            assert math.isclose(ours.samples, theirs.samples, rel_tol=0.15, abs_tol=1), name
            verdicts = [
                step(
                    name,
                    gates.gate(name),
                    GateState(),
                    m,
                    at=at,
                    counting_window_s=600,
                    error_limit=4,
                )[1].status
                for m in (ours, theirs)
            ]
            assert verdicts[0] == verdicts[1], (name, verdicts)
        rate = pairs[GateName.EXTRACTION_FAILURE_RATE][0]
        assert rate.value == pytest.approx(20.0, abs=3.0)  # the injected share, as counted
        scrape.close()
        other.close()
        # A whole time-scaled run from Prometheus fails the same gate the scrape tests fail.
        result, _events, _s = watch(
            served, tmp_path, gates_path, source=prometheus_source(prom.url)
        )
    assert result.verdict is Verdict.FAILED and result.failed_gate == "extractionFailureRate"
