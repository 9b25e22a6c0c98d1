"""The fleet gate's ``proxyErrorRate`` read through HAProxy's exporter, beside Debian's
Prometheus scraping the same exporter (the anchor): the same numbers, and the cost of one
evaluation.

A real haproxy on 127.0.0.1 (the project's generated config) in front of web1 (answers 200),
web2 (answers 500) and web3 (down); a client sends requests through it for a few seconds while
our source collects every 200 ms and Prometheus scrapes every 200 ms. Then, over the same
range ``[start, end]`` (load inside it, flat counters at both edges):

1. the numbers: 5xx, responses and the rate from our source (``HAProxySource``: its own
   scrapes and the monitor's PromQL ``increase``), from Prometheus (``increase`` over the
   range as PromQL), and what the client got;
2. the cost of one evaluation, interleaved ``REPEATS`` times: ours = one scrape of the exporter
   + parse + the window (what a poll does); Prometheus = the two instant queries the same
   gate needs. Medians, and ours / Prometheus.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.haproxy import backends, free_port, running_haproxy  # noqa: E402
from tests.support.prometheus_server import running_prometheus  # noqa: E402

from dhash_rollout.monitor.proxy_source import HAProxySource  # noqa: E402
from dhash_rollout.monitor.sources import PrometheusSource, SampleStore, range_selector  # noqa: E402
from dhash_rollout.targets.fleet.haproxy import HAProxyRuntime  # noqa: E402

LOAD_S = 4.0
REPEATS = 40
ERRORS = 'haproxy_backend_http_responses_total{proxy="dhash",code="5xx"}'
RESPONSES = 'haproxy_backend_http_responses_total{proxy="dhash"}'


def _load(url: str, stop: threading.Event, seen: Counter[int]) -> None:
    with httpx.Client(base_url=url, timeout=5) as client:
        while not stop.is_set():
            seen[client.get("/x").status_code] += 1
            time.sleep(0.002)


def _prometheus(prom: PrometheusSource, start: float, end: float) -> tuple[float, float]:
    rng = range_selector(start, end)
    errors = prom.query(f"sum(increase({ERRORS}{rng}))", end)
    total = prom.query(f"sum(increase({RESPONSES}{rng}))", end)
    return errors or 0.0, total or 0.0


def main() -> None:
    began = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="bench-proxy-") as raw,
        backends("web1", "web2") as made,
    ):
        tmp = Path(raw)
        made[1].status = 500
        servers = [(b.name, "127.0.0.1", b.port) for b in made]
        servers.append(("web3", "127.0.0.1", free_port()))
        with (
            running_haproxy(tmp, servers) as proxy,
            running_prometheus(proxy.metrics_address, tmp) as prom_server,
            httpx.Client(timeout=5) as http,
        ):
            runtime = HAProxyRuntime(proxy.runtime_api)
            for name in ("web1", "web2"):
                runtime.wait_for("dhash", name, lambda s: s.up, what="UP", timeout=10)
            prom_server.wait_scrapes(3)
            ours = HAProxySource(proxy.metrics_url, "dhash", store=SampleStore(), client=http)
            theirs = PrometheusSource(prom_server.url)
            start = time.time()
            ours.collect(start)
            time.sleep(0.5)  # flat counters at the range's first edge
            seen: Counter[int] = Counter()
            stop = threading.Event()
            client = threading.Thread(target=_load, args=(proxy.url, stop, seen))
            client.start()
            until = time.monotonic() + LOAD_S
            while time.monotonic() < until:
                time.sleep(0.2)
                ours.collect(time.time())
            stop.set()
            client.join()
            time.sleep(1.0)  # flat again; Prometheus has scraped the last counts
            end = time.time()
            ours.collect(end)
            window = ours.window(start, end)
            assert window is not None
            our_rate = ours.error_rate(start, end)
            prom_errors, prom_total = _prometheus(theirs, start, end)
            numbers = {
                "clients": {"5xx": seen[500] + seen[503], "responses": sum(seen.values())},
                "ours": {"5xx": window.responses["5xx"],
                         "responses": sum(window.responses.values()),
                         "rate_pct": round(our_rate.value or 0.0, 4)},
                "prometheus": {"5xx": round(prom_errors, 3), "responses": round(prom_total, 3),
                               "rate_pct": round(100 * prom_errors / prom_total, 4)},
            }  # fmt: skip
            ours_ms, prom_ms = [], []
            for _ in range(REPEATS):  # interleaved: both see the same machine load
                t = time.perf_counter()
                at = time.time()
                ours.collect(at)
                ours.error_rate(start, at)
                ours_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                _prometheus(theirs, start, time.time())
                prom_ms.append((time.perf_counter() - t) * 1000)
            theirs.close()
    mine, anchor = statistics.median(ours_ms), statistics.median(prom_ms)
    report = {
        "load_s": LOAD_S,
        "numbers": numbers,
        "cost": {
            "ours_scrape_parse_window_ms": round(mine, 2),
            "prometheus_two_queries_ms": round(anchor, 2),
            "ratio_ours_over_prometheus": round(mine / anchor, 2),
            "repeats": REPEATS,
        },
        "seconds": round(time.monotonic() - began, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
