"""Every Prometheus metric of the service, on an injectable registry.

The rollout monitor computes its gates from these series exactly as PromQL ``histogram_quantile``
and ``increase`` would, so the names, labels and buckets are a contract (ARCHITECTURE.md,
docs/api.md):

* ``dhash_hash_duration_seconds`` histogram, one observation per extracted image;
* ``dhash_extractions_total{result="ok|failed", kind}``: one per extracted image and one per
  item or whole input that failed; ``kind`` is the *input* kind (``image``, ``pdf``, ``video``,
  ``zip``, or ``unknown`` when the input could not even be identified);
* ``dhash_requests_total{route, status}``: ``route`` is the route template, never the raw path;
* ``dhash_low_confidence_queue_length`` gauge and ``dhash_build_info{version}``, both computed at
  scrape time: the queue length is read from the store, so every worker reports the same truth.

With several worker processes (``dhash serve``), prometheus_client's multiprocess mode is on
(``PROMETHEUS_MULTIPROC_DIR`` set before the workers start): counters and histograms live in
per-process files and :meth:`ServiceMetrics.render` sums them, so a scrape is exact whichever
worker answers it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from dhash_service.logs import get_logger

# The exposed series names: the contract the smoke tests, the demo and the monitor read.
HASH_DURATION = "dhash_hash_duration_seconds"
HASH_DURATION_COUNT = f"{HASH_DURATION}_count"
HASH_DURATION_SUM = f"{HASH_DURATION}_sum"
HASH_DURATION_BUCKET = f"{HASH_DURATION}_bucket"
EXTRACTIONS_TOTAL = "dhash_extractions_total"
REQUESTS_TOTAL = "dhash_requests_total"
LOW_CONFIDENCE_QUEUE_LENGTH = "dhash_low_confidence_queue_length"
BUILD_INFO = "dhash_build_info"

log = get_logger(__name__)

# Fine between 10 ms and 2.5 s, where a P95 of a real hash lands and where the production gate
# (P95 > 2000 ms) sits; linear interpolation inside a bucket is then off by at most a few percent.
HASH_DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.04,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    1.25,
    1.5,
    1.75,
    2.0,
    2.5,
    3.0,
    4.0,
    5.0,
    7.5,
    10.0,
)

# Series names as a scrape shows them: what the rollout monitor's queries are written against.
HASH_DURATION_SECONDS = "dhash_hash_duration_seconds"
EXTRACTIONS_TOTAL = "dhash_extractions_total"
LOW_CONFIDENCE_QUEUE_LENGTH = "dhash_low_confidence_queue_length"

INPUT_KINDS: tuple[str, ...] = ("image", "pdf", "video", "zip", "unknown")
UNKNOWN_KIND = "unknown"
UNMATCHED_ROUTE = "unmatched"


class _Timed(Protocol):
    @property
    def seconds(self) -> float: ...


class DigestLike(Protocol):
    """What a digest exposes to metrics (``dhash_service.digest.DigestResult`` satisfies it)."""

    @property
    def input_kind(self) -> str: ...

    @property
    def items(self) -> Sequence[_Timed]: ...

    @property
    def failures(self) -> Sequence[object]: ...


def multiprocess_dir() -> str | None:
    """The multiprocess directory prometheus_client itself uses, if multiprocess mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class _ScrapeTimeCollector(Collector):
    """Series computed when scraped: build info, and the review queue read from the store."""

    def __init__(self, version: str, queue_length: Callable[[], int] | None) -> None:
        self._version = version
        self._queue_length = queue_length

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily(
            "dhash_build_info", "The running dhash version (always 1).", labels=["version"]
        )
        info.add_metric([self._version], 1.0)
        yield info
        if self._queue_length is None:
            return
        try:
            length = self._queue_length()
        except Exception as exc:  # a down store must not take the other metrics with it
            log.warning("metrics.queue_length_unavailable", error=type(exc).__name__)
            return
        yield GaugeMetricFamily(
            "dhash_low_confidence_queue_length",
            "Review items pending, read from the store at scrape time.",
            value=float(length),
        )

    def describe(self) -> Iterator[Metric]:
        return iter(())  # nothing fixed: never collected at registration time


class ServiceMetrics:
    """The service's counters and histogram, and how a scrape is rendered."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        version: str,
        queue_length: Callable[[], int] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.hash_duration = Histogram(
            "dhash_hash_duration_seconds",
            "Time to extract and hash one image, per extracted image.",
            buckets=HASH_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.extractions = Counter(
            "dhash_extractions",
            "Extracted images (ok) and failed items or inputs (failed), by input kind.",
            ["result", "kind"],
            registry=self.registry,
        )
        self.requests = Counter(
            "dhash_requests",
            "HTTP requests answered, by route template and status code.",
            ["route", "status"],
            registry=self.registry,
        )
        # Series that exist from the start, so ``increase`` sees the first failure.
        for kind in INPUT_KINDS:
            for result in ("ok", "failed"):
                self.extractions.labels(result=result, kind=kind)
        self._scrape_time = _ScrapeTimeCollector(version, queue_length)
        self.registry.register(self._scrape_time)

    def record_digest(self, digest: DigestLike) -> None:
        """One hash-duration observation and one ``ok`` per image, one ``failed`` per item."""
        kind = digest.input_kind or UNKNOWN_KIND
        for item in digest.items:
            self.hash_duration.observe(item.seconds)
        if digest.items:
            self.extractions.labels(result="ok", kind=kind).inc(len(digest.items))
        if digest.failures:
            self.extractions.labels(result="failed", kind=kind).inc(len(digest.failures))

    def record_input_failure(self, kind: str | None) -> None:
        """A whole input refused by extraction counts as one failed extraction."""
        self.extractions.labels(result="failed", kind=kind or UNKNOWN_KIND).inc()

    def record_request(self, route: str, status: int) -> None:
        self.requests.labels(route=route, status=str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type; summed over workers in multiprocess mode."""
        path = multiprocess_dir()
        if path is None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=path)  # type: ignore[no-untyped-call]
        combined.register(self._scrape_time)
        return generate_latest(combined), CONTENT_TYPE_LATEST

    def close(self) -> None:
        """On worker exit: let prometheus_client drop this process's live-gauge files."""
        path = multiprocess_dir()
        if path is not None:
            multiprocess.mark_process_dead(os.getpid(), path)  # type: ignore[no-untyped-call]
