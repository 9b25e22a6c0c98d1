"""HAProxy's exporter as a monitor source, over text captured from a real HAProxy.

tests/unit/haproxy/ holds ``/metrics?scope=backend&scope=server`` of Debian's haproxy 2.6.12
running the project's generated config (tests/support/haproxy.py) in front of web1 (answers
200), web2 (answers 500) and web3 (nothing listening), checked on /ready every 100 ms:

0. ``idle``: checks settled (web1, web2 UP; web3 DOWN, L4CON), no request yet;
1. ``traffic``: 30 requests by a client: 15 x 200 (web1), 15 x 500 (web2);
2. ``all-down``: web1 and web2 made not ready (DOWN, L7STS), then 12 requests: 12 x 503
   made by HAProxy itself (no server up).
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pytest_httpserver import HTTPServer

from dhash_rollout.monitor.proxy_source import (
    HAProxySource,
    ProxiedFleetSource,
    ServerView,
    parse_haproxy,
    servers_line,
)
from dhash_rollout.monitor.sources import SampleStore
from dhash_service.metrics import ServiceMetrics

DATA = Path(__file__).parent / "haproxy"
IDLE, TRAFFIC, ALL_DOWN = (
    (DATA / f"exporter-{n}.txt").read_text() for n in ("0-idle", "1-traffic", "2-all-down")
)


def test_the_exporter_text_is_parsed_into_the_backends_kept_series() -> None:
    scraped = parse_haproxy(TRAFFIC, 10.0, "dhash")
    values = scraped.values
    assert values[("haproxy_backend_http_responses_total", (("code", "2xx"),))] == 15
    assert values[("haproxy_backend_http_responses_total", (("code", "5xx"),))] == 15
    web2_5xx = ("haproxy_server_http_responses_total", (("code", "5xx"), ("server", "web2")))
    assert values[web2_5xx] == 15
    # one-hot state gauges: only the current state is kept
    states = {dict(lab)["server"]: dict(lab)["state"]
              for (name, lab) in values if name == "haproxy_server_status"}  # fmt: skip
    assert states == {"web1": "UP", "web2": "UP", "web3": "DOWN"}
    assert values[("haproxy_backend_active_servers", ())] == 2


@pytest.mark.parametrize(
    ("text", "backend", "message"),
    [
        (TRAFFIC, "api", "no backend 'api' in HAProxy's metrics"),  # a typo must not read 0
        ("", "dhash", "no metric families"),
    ],
)
def test_text_without_the_backend_is_refused(text: str, backend: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_haproxy(text, 10.0, backend)


def _serve(server: HTTPServer, texts: list[str]) -> None:
    for text in texts:
        server.expect_ordered_request("/metrics").respond_with_data(text)


def test_the_window_counts_are_what_the_clients_got(httpserver: HTTPServer) -> None:
    _serve(httpserver, [IDLE, TRAFFIC, ALL_DOWN])
    with httpx.Client() as client:
        source = HAProxySource(httpserver.url_for("/metrics"), "dhash", store=SampleStore(),
                               client=client)  # fmt: skip
        for at in (100.0, 130.0, 160.0):
            assert source.collect(at) is None
        first = source.window(100.0, 130.0)
        assert first is not None
        assert (first.responses["2xx"], first.responses["5xx"]) == (15, 15)
        assert dict(first.server_5xx) == {"web1": 0, "web2": 15, "web3": 0}
        assert first.connection_errors == 0
        rate = source.error_rate(100.0, 130.0)
        assert rate.value == 50.0 and rate.samples == 30
        assert "servers UP 2/3 (web3 DOWN L4CON)" in rate.detail
        # no server up: HAProxy's own 503s, each also a connection error, no host counts them
        second = source.window(130.0, 160.0)
        assert second is not None
        assert (second.responses["5xx"], sum(second.responses.values())) == (12, 12)
        assert second.connection_errors == 12 and dict(second.server_5xx)["web2"] == 0
        down = source.error_rate(130.0, 160.0)
        assert down.value == 100.0 and "servers UP 0/3" in down.detail
        assert "web1 DOWN L7STS" in down.detail
        whole = source.error_rate(100.0, 160.0)
        assert whole.samples == 42 and whole.value == pytest.approx(100 * 27 / 42)
    assert "scope=backend" in httpserver.log[0][0].query_string.decode()


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (500, "oops", "answered HTTP 500"),
        (200, "<html>stats page</html>", "HAProxy's exporter at"),
        (200, IDLE.replace('proxy="dhash"', 'proxy="other"'), "no backend 'dhash'"),
    ],
)
def test_a_bad_exporter_answer_is_an_error_never_a_value(
    httpserver: HTTPServer, status: int, body: str, expected: str
) -> None:
    httpserver.expect_request("/metrics").respond_with_data(body, status=status)
    with httpx.Client() as client:
        source = HAProxySource(httpserver.url_for("/metrics"), "dhash", store=SampleStore(),
                               client=client)  # fmt: skip
        assert expected in (source.collect(1.0) or "")
        assert source.window(0.0, 1.0) is None


def test_an_exporter_down_errors_the_proxy_gate_alone(httpserver: HTTPServer) -> None:
    host = generate_latest(ServiceMetrics(CollectorRegistry(), version="1.0.0").registry)
    httpserver.expect_request("/metrics").respond_with_data(host.decode())
    source = ProxiedFleetSource({"web1": httpserver.url_for("")}, "http://127.0.0.1:9/metrics",
                                "dhash")  # fmt: skip
    try:
        assert source.collect(1.0) is None  # the hosts' gates are not blinded
        rate = source.proxy_error_rate(0.0, 1.0)
        assert rate.value is None and "cannot scrape HAProxy's exporter" in (rate.error or "")
    finally:
        source.close()


@pytest.mark.parametrize(
    ("servers", "line"),
    [
        ([], ""),
        ([ServerView("web1", "UP", "L7OK")], "servers UP 1/1"),
        ([ServerView("web1", "UP", "L7OK"), ServerView("web2", "DRAIN", "L7OK"),
          ServerView("web3", "MAINT", "")], "servers UP 1/3 (web2 DRAIN L7OK, web3 MAINT)"),
    ],
)  # fmt: skip
def test_the_servers_line_says_who_takes_traffic(servers: list[ServerView], line: str) -> None:
    assert servers_line(servers) == line
