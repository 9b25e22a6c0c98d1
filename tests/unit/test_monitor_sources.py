"""The scrape source's parsing and failure modes, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pytest_httpserver import HTTPServer

from dhash_rollout.monitor.sources import (
    FleetScrapeSource,
    ScrapeSource,
    parse_exposition,
    range_selector,
)
from dhash_service.metrics import ServiceMetrics


def exposition(failed: int, ok: int, seconds: list[float], version: str = "1.0.0") -> str:
    metrics = ServiceMetrics(CollectorRegistry(), version=version, queue_length=lambda: 7)
    for _ in range(failed):
        metrics.record_input_failure("image")
    metrics.extractions.labels(result="ok", kind="image").inc(ok)
    for s in seconds:
        metrics.hash_duration.observe(s)
    return generate_latest(metrics.registry).decode()


def test_the_services_own_exposition_is_parsed_into_the_kept_series() -> None:
    scraped = parse_exposition(exposition(2, 8, [0.01, 0.5]), at=10.0)
    assert scraped.version == "1.0.0"
    names = {name for name, _ in scraped.values}
    assert names == {
        "dhash_extractions_total",
        "dhash_hash_duration_seconds_bucket",
        "dhash_hash_duration_seconds_count",
        "dhash_low_confidence_queue_length",
    }


def _serve(server: HTTPServer, texts: list[str]) -> None:
    for text in texts:
        server.expect_ordered_request("/metrics").respond_with_data(text)


def test_window_values_are_computed_over_the_scraped_samples(httpserver: HTTPServer) -> None:
    _serve(httpserver, [exposition(0, 0, []), exposition(1, 9, [0.01] * 9 + [0.5])])
    source = ScrapeSource(httpserver.url_for(""))
    assert source.collect(100.0) is None and source.collect(130.0) is None
    rate = source.failure_rate(100.0, 130.0)
    assert rate.value == pytest.approx(10.0) and rate.samples == 10
    p95 = source.hash_p95_ms(100.0, 130.0)
    assert p95.samples == 10 and 400.0 < (p95.value or 0) <= 500.0  # in the (0.4, 0.5] bucket
    assert source.queue_length(130.0).value == 7.0
    source.close()


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        ("<html>not metrics</html>", 200, "not Prometheus text"),
        ("", 200, "not Prometheus text"),
        ("oops", 500, "HTTP 500"),
    ],
)
def test_garbage_or_an_error_answer_is_an_error_never_a_value(
    httpserver: HTTPServer, body: str, status: int, expected: str
) -> None:
    httpserver.expect_request("/metrics").respond_with_data(body, status=status)
    source = ScrapeSource(httpserver.url_for(""))
    error = source.collect(1.0)
    assert error is not None and expected in error
    source.close()


def test_samples_of_another_version_never_count(httpserver: HTTPServer) -> None:
    _serve(httpserver, [exposition(5, 5, [], version="0.9.0"), exposition(5, 5, [], "0.9.0")])
    source = ScrapeSource(httpserver.url_for(""), version="1.0.0")
    source.collect(1.0)
    source.collect(2.0)
    assert source.failure_rate(0.0, 2.0).value is None and source.skipped_old == 2
    source.close()


@pytest.mark.parametrize(
    ("start", "end", "text"), [(0.0, 600.0, "[600000ms]"), (5.0, 5.0, "[1ms]")]
)
def test_the_prometheus_range_is_the_exact_window(start: float, end: float, text: str) -> None:
    assert range_selector(start, end) == text


@pytest.fixture
def second_host() -> Iterator[HTTPServer]:
    server = HTTPServer(host="127.0.0.1")
    server.start()
    yield server
    server.clear()
    server.stop()


def test_a_fleets_gates_sum_every_hosts_own_counters_whatever_release_it_runs(
    httpserver: HTTPServer, second_host: HTTPServer
) -> None:
    # web1 (new release) had 1 failure in 10; web2 (still the old one) none in 10: 1 of 20.
    _serve(httpserver, [exposition(0, 0, []), exposition(1, 9, [0.01] * 10, version="2.0.0")])
    _serve(second_host, [exposition(0, 0, [], "1.0.0"), exposition(0, 10, [0.5] * 10, "1.0.0")])
    hosts = {"web1": httpserver.url_for(""), "web2": second_host.url_for("")}
    source = FleetScrapeSource(hosts)
    assert source.collect(100.0) is None and source.collect(130.0) is None
    rate = source.failure_rate(100.0, 130.0)
    assert rate.value == pytest.approx(5.0) and rate.samples == 20
    p95 = source.hash_p95_ms(100.0, 130.0)
    assert p95.samples == 20 and 400.0 < (p95.value or 0) <= 500.0  # half the hashes took 0.5 s
    source.close()


def test_scraping_through_a_balancer_mixes_two_hosts_counters_and_the_fleet_source_does_not(
    httpserver: HTTPServer, second_host: HTTPServer
) -> None:
    # web1 has served 1000 extractions, web2 10; in the window each adds 10, none failing.
    before = {"web1": exposition(0, 1000, []), "web2": exposition(0, 10, [])}
    after = {"web1": exposition(0, 1010, []), "web2": exposition(0, 20, [])}
    balancer = HTTPServer(host="127.0.0.1")
    balancer.start()
    try:  # round robin through one URL: web1, web2, web1, web2
        _serve(balancer, [before["web1"], before["web2"], after["web1"], after["web2"]])
        through_proxy = ScrapeSource(balancer.url_for(""))
        for at in (100.0, 110.0, 120.0, 130.0):
            assert through_proxy.collect(at) is None
        mixed = through_proxy.failure_rate(100.0, 130.0)
        through_proxy.close()
    finally:
        balancer.clear()
        balancer.stop()
    _serve(httpserver, [before["web1"], after["web1"]])
    _serve(second_host, [before["web2"], after["web2"]])
    fleet = FleetScrapeSource({"web1": httpserver.url_for(""), "web2": second_host.url_for("")})
    assert fleet.collect(100.0) is None and fleet.collect(130.0) is None
    assert fleet.failure_rate(100.0, 130.0).samples == 20
    assert mixed.samples != 20  # each drop from web1's count to web2's read as a reset
    fleet.close()


def test_a_host_that_cannot_be_scraped_is_named_and_the_others_still_count(
    httpserver: HTTPServer, second_host: HTTPServer
) -> None:
    _serve(httpserver, [exposition(0, 0, []), exposition(2, 8, [])])
    second_host.expect_request("/metrics").respond_with_data("down", status=503)
    hosts = {"web1": httpserver.url_for(""), "web2": second_host.url_for("")}
    source = FleetScrapeSource(hosts)
    error = source.collect(100.0)
    assert error is not None and "HTTP 503" in error and second_host.url_for("") in error
    source.collect(130.0)
    assert source.failure_rate(100.0, 130.0).value == pytest.approx(20.0)
    source.close()
