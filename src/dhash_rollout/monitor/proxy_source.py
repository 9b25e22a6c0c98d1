"""What only the fleet's proxy sees, from HAProxy's own Prometheus exporter.

HAProxy (Debian's 2.6 is built with ``USE_PROMEX``) serves its counters on the stats frontend
the generated ``haproxy.cfg`` binds on ``ProxySettings.metrics_address``
(``targets/fleet/haproxy_config.py``). Read with ``?scope=backend&scope=server`` (the
frontends and the process are not needed; a third less text) and parsed with
prometheus_client's parser, as the hosts' ``/metrics`` are; of one backend it keeps:

* ``haproxy_{backend,server}_http_responses_total{code="1xx".."5xx"|"other"}``: what the
  clients got by class, for the backend (the 503s HAProxy makes itself when no server is up
  included) and per server;
* ``..._connection_errors_total``, ``..._response_errors_total``,
  ``..._retry_warnings_total``, ``..._redispatch_warnings_total``;
* ``haproxy_server_status{state}`` and ``haproxy_server_check_status{state}`` (1 for the
  server's current state), ``haproxy_backend_active_servers``;
* ``..._response_time_average_seconds`` and ``..._total_time_average_seconds`` (HAProxy's
  average over its last 1024 requests: said, not gated).

Counters become window values with the monitor's :func:`~dhash_rollout.monitor.promql.increase`
(a reload of HAProxy resets them: PromQL's reset rule applies), the gate value with
:func:`~dhash_rollout.monitor.gates.proxy_error_rate`. The samples go to the run's
:class:`~dhash_rollout.monitor.sources.SampleStore`, so a resumed monitor keeps them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

from dhash_rollout.monitor.gates import Measurement, ProxyWindow, proxy_error_rate
from dhash_rollout.monitor.promql import Point
from dhash_rollout.monitor.sources import (
    FleetScrapeSource,
    Labels,
    SampleStore,
    Scraped,
    sum_increase,
)

SCOPE = "?scope=backend&scope=server"
RESPONSES = "haproxy_backend_http_responses_total"
SERVER_RESPONSES = "haproxy_server_http_responses_total"
CONNECTION_ERRORS = "haproxy_backend_connection_errors_total"
RESPONSE_ERRORS = "haproxy_backend_response_errors_total"
RETRIES = "haproxy_backend_retry_warnings_total"
REDISPATCHES = "haproxy_backend_redispatch_warnings_total"
ACTIVE_SERVERS = "haproxy_backend_active_servers"
SERVER_STATUS = "haproxy_server_status"
CHECK_STATUS = "haproxy_server_check_status"
RESPONSE_TIME = "haproxy_backend_response_time_average_seconds"
TOTAL_TIME = "haproxy_backend_total_time_average_seconds"
SERVER_COUNTERS = tuple(
    f"haproxy_server_{what}_total"
    for what in ("connection_errors", "response_errors", "retry_warnings", "redispatch_warnings")
)
KEPT = frozenset(
    {
        RESPONSES, SERVER_RESPONSES, CONNECTION_ERRORS, RESPONSE_ERRORS, RETRIES, REDISPATCHES,
        ACTIVE_SERVERS, SERVER_STATUS, CHECK_STATUS, RESPONSE_TIME, TOTAL_TIME,
        "haproxy_server_response_time_average_seconds",
        "haproxy_server_total_time_average_seconds", *SERVER_COUNTERS,
    }
)  # fmt: skip
# One-hot gauges: only the sample at 1 (the current state) is kept.
ONE_HOT = frozenset({SERVER_STATUS, CHECK_STATUS})


def parse_haproxy(text: str, at: float, backend: str) -> Scraped:
    """The kept series of ``backend`` in an exporter's text; ``ValueError`` for text that is
    not Prometheus text or has no such backend (a wrong ``backend`` must not read as 0)."""
    values: dict[tuple[str, Labels], float] = {}
    seen_backend = False
    families = list(text_string_to_metric_families(text))
    if not families:
        raise ValueError("no metric families in the answer")
    for family in families:
        for sample in family.samples:
            if sample.name not in KEPT or sample.labels.get("proxy") != backend:
                continue
            seen_backend = True
            if sample.name in ONE_HOT and sample.value != 1:
                continue
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "proxy"))
            values[(sample.name, labels)] = float(sample.value)
    if not seen_backend:
        raise ValueError(f"no backend {backend!r} in HAProxy's metrics")
    return Scraped(at, values, None)


@dataclass(frozen=True)
class ServerView:
    """One backend server as the proxy saw it at the last scrape."""

    name: str
    state: str  # UP, DOWN, MAINT, DRAIN, NOLB
    check: str  # L7OK, L4CON, L7STS, ... ("" before its first check)


def _latest(points: list[Point], at: float) -> Point | None:
    past = [p for p in points if p.t <= at + 1e-3]
    return past[-1] if past else None


class HAProxySource:
    """HAProxy's exporter at each poll: the backend's window counts and its servers' state."""

    name = "haproxy"

    def __init__(
        self, metrics_url: str, backend: str, *, store: SampleStore, client: httpx.Client
    ) -> None:
        self.url = metrics_url
        self.backend = backend
        self.store = store
        self.client = client

    def collect(self, at: float) -> str | None:
        try:
            answer = self.client.get(self.url + SCOPE)
        except httpx.HTTPError as exc:
            return f"cannot scrape HAProxy's exporter at {self.url}: {type(exc).__name__}: {exc}"
        if answer.status_code != 200:
            return f"HAProxy's exporter at {self.url} answered HTTP {answer.status_code}"
        try:
            scraped = parse_haproxy(answer.text, at, self.backend)
        except (ValueError, IndexError, KeyError) as exc:
            return f"HAProxy's exporter at {self.url}: {exc}"
        self.store.add(scraped)
        return None

    def _increase(self, name: str, start: float, end: float, **match: str) -> float:
        return sum_increase(self.store, name, start, end, **match) or 0.0

    def window(self, start: float, end: float) -> ProxyWindow | None:
        """The backend's counts over ``[start, end]``; None without two scrapes in it."""
        responses: dict[str, float] = {}
        for labels, _ in self.store.named(RESPONSES):
            code = dict(labels).get("code", "other")
            value = sum_increase(self.store, RESPONSES, start, end, code=code)
            if value is not None:
                responses[code] = value
        if not responses:
            return None
        server_5xx: dict[str, float] = {}
        for labels, _ in self.store.named(SERVER_RESPONSES, code="5xx"):
            server = dict(labels).get("server", "")
            server_5xx[server] = self._increase(SERVER_RESPONSES, start, end, server=server,
                                                code="5xx")  # fmt: skip
        return ProxyWindow(
            responses,
            connection_errors=self._increase(CONNECTION_ERRORS, start, end),
            response_errors=self._increase(RESPONSE_ERRORS, start, end),
            retries=self._increase(RETRIES, start, end),
            redispatches=self._increase(REDISPATCHES, start, end),
            server_5xx=server_5xx,
        )

    def servers(self, at: float) -> list[ServerView]:
        """Each server's state and check status at the last scrape up to ``at``."""
        latest: dict[str, dict[str, tuple[float, str]]] = {}
        for name in (SERVER_STATUS, CHECK_STATUS):
            for labels, points in self.store.named(name):
                found = dict(labels)
                point = _latest(points, at)
                if point is None:
                    continue
                mine = latest.setdefault(found.get("server", ""), {})
                if name not in mine or mine[name][0] < point.t:
                    mine[name] = (point.t, found.get("state", ""))
        return [
            ServerView(server, seen.get(SERVER_STATUS, (0, "?"))[1],
                       seen.get(CHECK_STATUS, (0, ""))[1])
            for server, seen in sorted(latest.items())
        ]  # fmt: skip

    def gauge(self, name: str, at: float) -> float | None:
        point = None
        for _, points in self.store.named(name):
            point = _latest(points, at)
        return None if point is None else point.v

    def error_rate(self, start: float, end: float) -> Measurement:
        measured = proxy_error_rate(self.window(start, end), end - start)
        state = servers_line(self.servers(end))
        times = times_line(self.gauge(RESPONSE_TIME, end), self.gauge(TOTAL_TIME, end))
        extra = "; ".join(part for part in (state, times) if part)
        if not extra:
            return measured
        detail = f"{measured.detail}; {extra}"
        return Measurement(measured.value, measured.samples, measured.error,
                           measured.window_s, detail)  # fmt: skip


def servers_line(servers: list[ServerView]) -> str:
    """``servers UP 2/3 (web3 DOWN L4CON)``: who takes traffic, and why the others do not."""
    if not servers:
        return ""
    up = [s for s in servers if s.state == "UP"]
    others = ", ".join(f"{s.name} {s.state} {s.check}".rstrip() for s in servers if s not in up)
    return f"servers UP {len(up)}/{len(servers)}" + (f" ({others})" if others else "")


def times_line(response_s: float | None, total_s: float | None) -> str:
    if response_s is None and total_s is None:
        return ""
    shown = [
        f"{what} {value * 1000:.0f} ms"
        for what, value in (("response", response_s), ("total", total_s))
        if value is not None
    ]
    return "average " + ", ".join(shown) + " (HAProxy's last 1024 requests)"


class ProxiedFleetSource(FleetScrapeSource):
    """A fleet's gate source: every host's own ``/metrics`` (the extraction, hash-time and
    queue gates, as :class:`FleetScrapeSource`) and the proxy's exporter (``proxyErrorRate``:
    the fleet as its clients see it, the proxy's own 503s included, which no host counts)."""

    name = "scrape-fleet+haproxy"

    def __init__(
        self,
        hosts: Mapping[str, str],
        metrics_url: str,
        backend: str,
        *,
        store: SampleStore | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        super().__init__(hosts, store=store, timeout_s=timeout_s)
        self.proxy = HAProxySource(metrics_url, backend, store=self.store, client=self.client)

        self.proxy_error: str | None = None

    def collect(self, at: float) -> str | None:
        """The hosts' trouble is the poll's error (every host gate); the exporter's is the
        proxy gate's alone: an exporter down must not blind the hosts' gates, nor they it."""
        self.proxy_error = self.proxy.collect(at)
        return super().collect(at)

    def proxy_error_rate(self, start: float, end: float) -> Measurement:
        if self.proxy_error is not None:
            return Measurement(None, error=self.proxy_error)
        return self.proxy.error_rate(start, end)
