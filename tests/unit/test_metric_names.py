"""The metric-name constants the smoke tests, the demo and the monitor read are the names the
service exposes (a renamed series fails here, not in a monitor that silently sees no data)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from dhash_rollout.checks.smoke import REQUIRED_METRICS, metric_names
from dhash_service import metrics
from dhash_service.metrics import ServiceMetrics

CONSTANTS = (
    metrics.HASH_DURATION,
    metrics.HASH_DURATION_COUNT,
    metrics.HASH_DURATION_SUM,
    metrics.HASH_DURATION_BUCKET,
    metrics.EXTRACTIONS_TOTAL,
    metrics.REQUESTS_TOTAL,
    metrics.LOW_CONFIDENCE_QUEUE_LENGTH,
    metrics.BUILD_INFO,
)


def test_every_metric_name_constant_is_exposed_by_the_service() -> None:
    registry = CollectorRegistry()
    service = ServiceMetrics(registry, version="1.2.3", queue_length=lambda: 0)
    service.requests.labels(route="/health", status="200").inc()
    exposed = metric_names(service.render()[0].decode())
    assert [name for name in CONSTANTS if name not in exposed] == []
    assert set(REQUIRED_METRICS) <= exposed
