"""Where the gates' numbers come from: the service's ``/metrics`` (scrape) or a Prometheus.

Both sources answer the same three questions over the same range (``[start, end]``, never
before the switch), so the same traffic gives the same values and verdicts:

* the extraction failure rate, ``100 * sum(increase(failed)) / sum(increase(all))``;
* the P95 hash time, ``histogram_quantile(0.95, sum by (le) (increase(..._bucket)))`` in ms;
* the low-confidence queue length, the latest gauge value.

The scrape source keeps every sample it scraped and computes those with
:mod:`dhash_rollout.monitor.promql`; ``dhash serve`` runs prometheus_client's multiprocess mode,
whose ``/metrics`` already sums the workers, so one scrape is the whole service. A source that
cannot be reached or answers garbage reports an error, never a value.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dhash_rollout.monitor.gates import Measurement
from dhash_rollout.monitor.promql import Bucket, Point, bucket_quantile, increase, ms
from dhash_service.metrics import (
    EXTRACTIONS_TOTAL,
    HASH_DURATION_SECONDS,
    LOW_CONFIDENCE_QUEUE_LENGTH,
)

BUCKETS = f"{HASH_DURATION_SECONDS}_bucket"
COUNT = f"{HASH_DURATION_SECONDS}_count"
BUILD_INFO = "dhash_build_info"
KEPT = frozenset({EXTRACTIONS_TOTAL, BUCKETS, COUNT, LOW_CONFIDENCE_QUEUE_LENGTH})
QUANTILE = 0.95
LOOKBACK_S = 300.0  # PromQL's default lookback for an instant vector
Labels = tuple[tuple[str, str], ...]


class MetricSource(Protocol):
    name: str

    def collect(self, at: float) -> str | None:
        """Take this poll's samples (a scrape); the error, or None."""

    def failure_rate(self, start: float, end: float) -> Measurement: ...

    def hash_p95_ms(self, start: float, end: float) -> Measurement: ...

    def queue_length(self, at: float) -> Measurement: ...

    def close(self) -> None: ...


@runtime_checkable
class ReadsProxy(Protocol):
    """A source that also reads a fleet's proxy (``proxyErrorRate``): only such a source's
    runs evaluate the proxy gates (``gates_config.PROXY_GATES``)."""

    def proxy_error_rate(self, start: float, end: float) -> Measurement: ...


def _fmt(value: float) -> str:
    return f"{value:.6g}"


@dataclass(frozen=True)
class Scraped:
    """One scrape's kept samples: ``(name, labels) -> value`` and the version that answered."""

    at: float
    values: dict[tuple[str, Labels], float]
    version: str | None


def parse_exposition(text: str, at: float) -> Scraped:
    """The kept series of a ``/metrics`` text; ``ValueError`` for text that is not one."""
    values: dict[tuple[str, Labels], float] = {}
    version = None
    families = list(text_string_to_metric_families(text))
    if not families:
        raise ValueError("no metric families in the answer")
    for family in families:
        for sample in family.samples:
            if sample.name == BUILD_INFO:
                version = sample.labels.get("version")
            elif sample.name in KEPT:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return Scraped(at, values, version)


class SampleStore:
    """Every kept sample by series, in scrape order; optionally mirrored to a JSONL file so a
    resumed monitor continues the same window with the samples it had."""

    def __init__(self, path: Path | None = None) -> None:
        self.series: dict[tuple[str, Labels], list[Point]] = defaultdict(list)
        self.path = path
        if path is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self._add(
                        Scraped(float(row["at"]), _values_from(row["values"]), row.get("version"))
                    )
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line after a crash: the rest is intact

    def _add(self, scraped: Scraped) -> None:
        for key, value in scraped.values.items():
            self.series[key].append(Point(ms(scraped.at) / 1000, value))

    def add(self, scraped: Scraped) -> None:
        self._add(scraped)
        if self.path is not None:
            values = [
                [n, [list(pair) for pair in lab], v] for (n, lab), v in scraped.values.items()
            ]
            row = {"at": scraped.at, "version": scraped.version, "values": values}
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(row) + "\n")

    def named(self, name: str, **match: str) -> Iterable[tuple[Labels, list[Point]]]:
        for (series_name, labels), points in self.series.items():
            if series_name == name and all(dict(labels).get(k) == v for k, v in match.items()):
                yield labels, points


def _values_from(raw: list[list[object]]) -> dict[tuple[str, Labels], float]:
    out: dict[tuple[str, Labels], float] = {}
    for name, labels, value in raw:
        pairs = tuple((str(k), str(v)) for k, v in labels)  # type: ignore[attr-defined]
        out[(str(name), pairs)] = float(value)  # type: ignore[arg-type]
    return out


def sum_increase(
    store: SampleStore, name: str, start: float, end: float, **match: str
) -> float | None:
    parts = [increase(points, start, end) for _, points in store.named(name, **match)]
    present = [p for p in parts if p is not None]
    return sum(present) if present else None


def failure_rate_from(failed: float | None, total: float | None, window_s: float) -> Measurement:
    if total is None or failed is None or total <= 0:
        return Measurement(
            None, samples=0, window_s=window_s, detail="no extractions in the window"
        )
    rate = 100.0 * failed / total
    return Measurement(
        rate,
        samples=round(total),
        window_s=window_s,
        detail=f"{_fmt(failed)} failed of {_fmt(total)}",
    )


def p95_from(quantile_s: float | None, count: float | None, window_s: float) -> Measurement:
    if quantile_s is None or count is None or math.isnan(quantile_s) or count <= 0:
        return Measurement(None, samples=0, window_s=window_s, detail="no hashes in the window")
    return Measurement(
        quantile_s * 1000.0,
        samples=round(count),
        window_s=window_s,
        detail=f"P95 of {_fmt(count)} hashes",
    )


class ScrapeSource:
    """``GET /metrics`` at each poll; the gates computed here, as PromQL would."""

    name = "scrape"

    def __init__(
        self,
        base_url: str,
        *,
        version: str | None = None,
        store: SampleStore | None = None,
        timeout_s: float = 5.0,
        client: httpx.Client | None = None,
        instance: str | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + "/metrics"
        self.version = version
        self.store = store if store is not None else SampleStore()
        self.client = client or httpx.Client(timeout=timeout_s)
        self.skipped_old = 0
        self.instance = instance

    def close(self) -> None:
        self.client.close()

    def collect(self, at: float) -> str | None:
        try:
            answer = self.client.get(self.url)
        except httpx.HTTPError as exc:
            return f"cannot scrape {self.url}: {type(exc).__name__}: {exc}"
        if answer.status_code != 200:
            return f"{self.url} answered HTTP {answer.status_code}"
        try:
            scraped = parse_exposition(answer.text, at)
        except (ValueError, IndexError, KeyError) as exc:
            return f"{self.url} answered something that is not Prometheus text: {exc}"
        if self.version is not None and scraped.version not in (None, self.version):
            self.skipped_old += 1  # the old release answered: its samples never count
            return None
        self.store.add(with_instance(scraped, self.instance) if self.instance else scraped)
        return None

    def failure_rate(self, start: float, end: float) -> Measurement:
        failed = sum_increase(self.store, EXTRACTIONS_TOTAL, start, end, result="failed")
        total = sum_increase(self.store, EXTRACTIONS_TOTAL, start, end)
        return failure_rate_from(failed, total, end - start)

    def hash_p95_ms(self, start: float, end: float) -> Measurement:
        by_le: dict[float, float] = defaultdict(float)
        seen = False
        for labels, points in self.store.named(BUCKETS):
            value = increase(points, start, end)
            if value is not None:
                by_le[float(dict(labels)["le"])] += value
                seen = True
        count = sum_increase(self.store, COUNT, start, end)
        quantile = (
            bucket_quantile(QUANTILE, [Bucket(le, c) for le, c in by_le.items()]) if seen else None
        )
        return p95_from(quantile, count, end - start)

    def queue_length(self, at: float) -> Measurement:
        latest: Point | None = None
        for _, points in self.store.named(LOW_CONFIDENCE_QUEUE_LENGTH):
            recent = [p for p in points if at - LOOKBACK_S < p.t <= at + 1e-3]
            if recent and (latest is None or recent[-1].t > latest.t):
                latest = recent[-1]
        if latest is None:
            return Measurement(None, detail="no queue gauge scraped")
        return Measurement(latest.v, samples=1)


def with_instance(scraped: Scraped, instance: str) -> Scraped:
    """``scraped`` with an ``instance`` label on every series, as Prometheus adds per target:
    each host's counters stay their own series, so increases never mix two hosts' counters."""
    values = {
        (name, tuple(sorted((*labels, ("instance", instance))))): value
        for (name, labels), value in scraped.values.items()
    }
    return Scraped(scraped.at, values, scraped.version)


class FleetScrapeSource(ScrapeSource):
    """Every host's own ``/metrics`` at each poll, the gates over their sum.

    A fleet's view through its proxy cannot come from scraping the proxy: each scrape reaches
    whichever host the balancer picks, so one series would jump between hosts' counters and
    every jump read as a reset. Here each host is its own instance and the gates are PromQL's
    ``sum(increase(...))`` across them; every release counts (the fleet as its clients see it,
    old and new hosts side by side); the per-host gates judge the new release alone."""

    name = "scrape-fleet"

    def __init__(
        self,
        hosts: Mapping[str, str],
        *,
        store: SampleStore | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        if not hosts:
            raise ValueError("a fleet source needs at least one host")
        super().__init__(next(iter(hosts.values())), store=store, timeout_s=timeout_s)
        self.members = [
            ScrapeSource(url, store=self.store, client=self.client, instance=name)
            for name, url in hosts.items()
        ]

    def collect(self, at: float) -> str | None:
        problems = [why for member in self.members if (why := member.collect(at))]
        return "; ".join(problems) or None


def range_selector(start: float, end: float) -> str:
    """A PromQL range of exactly ``end - start`` (milliseconds, as Prometheus resolves them)."""
    return f"[{max(1, ms(end) - ms(start))}ms]"


class PrometheusSource:
    """The same three numbers from a Prometheus server's HTTP API (``/api/v1/query``)."""

    name = "prometheus"

    def __init__(
        self, prometheus_url: str, *, timeout_s: float = 5.0, client: httpx.Client | None = None
    ) -> None:
        self.url = prometheus_url.rstrip("/") + "/api/v1/query"
        self.client = client or httpx.Client(timeout=timeout_s)

    def close(self) -> None:
        self.client.close()

    def collect(self, at: float) -> str | None:
        return None  # Prometheus scrapes on its own schedule

    def query(self, expr: str, at: float) -> float | None:
        """A one-element (or empty) instant vector's value; ``SourceError`` otherwise."""
        try:
            answer = self.client.get(self.url, params={"query": expr, "time": f"{at:.3f}"})
        except httpx.HTTPError as exc:
            raise SourceError(f"cannot query {self.url}: {type(exc).__name__}: {exc}") from None
        try:
            body = answer.json()
        except ValueError:
            raise SourceError(f"{self.url} answered HTTP {answer.status_code}, not JSON") from None
        if not isinstance(body, dict) or body.get("status") != "success":
            error = body.get("error") if isinstance(body, dict) else None
            raise SourceError(f"{self.url}: query failed: {error or answer.status_code}")
        result = body.get("data", {}).get("result")
        if not isinstance(result, list):
            raise SourceError(f"{self.url}: unexpected answer shape")
        if not result:
            return None
        try:
            value = float(result[0]["value"][1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise SourceError(f"{self.url}: unexpected sample {result[0]!r}") from None
        return None if math.isnan(value) else value

    def failure_rate(self, start: float, end: float) -> Measurement:
        rng = range_selector(start, end)
        try:
            failed = self.query(f'sum(increase({EXTRACTIONS_TOTAL}{{result="failed"}}{rng}))', end)
            total = self.query(f"sum(increase({EXTRACTIONS_TOTAL}{rng}))", end)
        except SourceError as err:
            return Measurement(None, error=str(err))
        return failure_rate_from(failed, total, end - start)

    def hash_p95_ms(self, start: float, end: float) -> Measurement:
        rng = range_selector(start, end)
        try:
            quantile = self.query(
                f"histogram_quantile({QUANTILE}, sum by (le) (increase({BUCKETS}{rng})))", end
            )
            count = self.query(f"sum(increase({COUNT}{rng}))", end)
        except SourceError as err:
            return Measurement(None, error=str(err))
        return p95_from(quantile, count, end - start)

    def queue_length(self, at: float) -> Measurement:
        try:
            value = self.query(f"max({LOW_CONFIDENCE_QUEUE_LENGTH})", at)
        except SourceError as err:
            return Measurement(None, error=str(err))
        if value is None:
            return Measurement(None, detail="no queue gauge in Prometheus")
        return Measurement(value, samples=1)


class SourceError(Exception):
    pass


# The /ready checks that say the service cannot do its work: its store. Saturation, a drain or
# an index still loading make a worker not ready too, but they are load and lifecycle, not ill
# health: counting them would fail the gate of a release that is merely busy.
DEPENDENCY_CHECKS = ("store",)


def dependency_failure(readiness: object) -> str | None:
    """What a ``/ready`` body says is broken among ``DEPENDENCY_CHECKS`` (e.g. ``store:
    unreachable: OperationalError``), or None. ``/health`` deliberately touches no dependency
    (a slow store must not make a live process look dead), so the gate reads it here."""
    checks = readiness.get("checks") if isinstance(readiness, dict) else None
    if not isinstance(checks, dict):
        return None
    broken = [f"{name}: {checks[name]}" for name in DEPENDENCY_CHECKS
              if name in checks and checks[name] != "ok"]  # fmt: skip
    return "; ".join(broken) or None


def probe_health(client: httpx.Client, base_url: str) -> Measurement:
    """One health check: 1 for non-OK. Non-OK is ``GET /health`` failing (an error status, a
    refused connection, a timeout) or, with the process alive, ``GET /ready`` saying its store
    is unreachable (a database outage the liveness probe is built not to see)."""
    base = base_url.rstrip("/")
    try:
        answer = client.get(base + "/health")
    except httpx.HTTPError as exc:
        return Measurement(1.0, samples=1, detail=f"{type(exc).__name__}")
    if answer.status_code != 200:
        return Measurement(1.0, samples=1, detail=f"HTTP {answer.status_code}")
    try:
        ready = client.get(base + "/ready")
        body: object = ready.json() if ready.status_code != 200 else None
    except (httpx.HTTPError, ValueError):
        body = None  # /health answered: a /ready hiccup alone is not ill health
    broken = dependency_failure(body)
    if broken is not None:
        return Measurement(1.0, samples=1, detail=f"/health 200, /ready {broken}")
    return Measurement(0.0, samples=1, detail="HTTP 200")
