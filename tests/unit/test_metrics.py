"""ServiceMetrics on an injected registry: exact series for known observations."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from prometheus_client import CollectorRegistry

from dhash_service.metrics import HASH_DURATION_BUCKETS, INPUT_KINDS, ServiceMetrics


@dataclass
class Item:
    seconds: float


@dataclass
class Digest:
    input_kind: str
    items: list[Item] = field(default_factory=list)
    failures: list[object] = field(default_factory=list)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_each_extracted_image_is_one_histogram_observation_in_exact_buckets() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry, version="9.9.9")
    metrics.record_digest(Digest("pdf", [Item(0.004), Item(0.012), Item(1.9)], [object()]))
    metrics.record_digest(Digest("image", [Item(11.0)]))

    def bucket(le: str) -> float | None:
        return sample(registry, "dhash_hash_duration_seconds_bucket", le=le)

    assert bucket("0.0025") == 0
    assert bucket("0.005") == 1
    assert bucket("0.015") == 2
    assert bucket("1.75") == 2
    assert bucket("2.0") == 3
    assert bucket("10.0") == 3
    assert bucket("+Inf") == 4
    assert sample(registry, "dhash_hash_duration_seconds_count") == 4
    assert sample(registry, "dhash_hash_duration_seconds_sum") == 0.004 + 0.012 + 1.9 + 11.0
    assert sample(registry, "dhash_extractions_total", result="ok", kind="pdf") == 3
    assert sample(registry, "dhash_extractions_total", result="failed", kind="pdf") == 1
    assert sample(registry, "dhash_extractions_total", result="ok", kind="image") == 1


def test_a_refused_input_is_one_failure_of_its_kind_or_unknown() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics(registry, version="9.9.9")
    metrics.record_input_failure("zip")
    metrics.record_input_failure(None)
    assert sample(registry, "dhash_extractions_total", result="failed", kind="zip") == 1
    assert sample(registry, "dhash_extractions_total", result="failed", kind="unknown") == 1
    assert sample(registry, "dhash_hash_duration_seconds_count") == 0


def test_every_result_and_kind_series_exists_from_the_start_at_zero() -> None:
    registry = CollectorRegistry()
    ServiceMetrics(registry, version="1.0")
    for kind in INPUT_KINDS:
        for result in ("ok", "failed"):
            assert sample(registry, "dhash_extractions_total", result=result, kind=kind) == 0


def test_buckets_reach_ten_seconds_and_hold_the_production_gate() -> None:
    assert HASH_DURATION_BUCKETS[-1] == 10.0
    assert 2.0 in HASH_DURATION_BUCKETS
    assert list(HASH_DURATION_BUCKETS) == sorted(set(HASH_DURATION_BUCKETS))
    fine = [b for b in HASH_DURATION_BUCKETS if 0.01 <= b <= 2.0]
    assert all(b / a <= 1.6 for a, b in pairwise(fine))


def test_queue_length_and_build_info_are_computed_at_scrape_time() -> None:
    registry = CollectorRegistry()
    pending = [3]
    ServiceMetrics(registry, version="1.2.3", queue_length=lambda: pending[0])
    assert sample(registry, "dhash_low_confidence_queue_length") == 3
    pending[0] = 0
    assert sample(registry, "dhash_low_confidence_queue_length") == 0
    assert sample(registry, "dhash_build_info", version="1.2.3") == 1


def test_a_store_that_fails_at_scrape_time_drops_only_the_queue_gauge() -> None:
    registry = CollectorRegistry()

    def broken() -> int:
        raise ConnectionError("store down")

    metrics = ServiceMetrics(registry, version="1.2.3", queue_length=broken)
    metrics.record_request("/health", 200)
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    assert b"dhash_low_confidence_queue_length" not in body
    assert b'dhash_requests_total{route="/health",status="200"} 1.0' in body
