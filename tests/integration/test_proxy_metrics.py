"""HAProxy's own exporter read by the fleet gate's proxy source, against a real haproxy on
127.0.0.1 (Debian's 2.6, the project's generated config) in front of real HTTP servers:
web1 answers 200, web2 answers 500, web3 is down (nothing listens on its port). What the
source counts over the window is what the clients got."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from dhash_rollout.cli import main
from dhash_rollout.monitor.proxy_source import HAProxySource
from dhash_rollout.monitor.sources import SampleStore
from dhash_rollout.targets.fleet.haproxy import HAProxyRuntime
from tests.support.haproxy import HAPROXY, backends, free_port, running_haproxy


def _requests(url: str, n: int) -> Counter[int]:
    seen: Counter[int] = Counter()
    with httpx.Client(base_url=url, timeout=5) as client:
        for i in range(n):
            seen[client.get(f"/item/{i}", headers={"Connection": "close"}).status_code] += 1
    return seen


def test_the_proxy_sources_counts_are_what_the_clients_got(tmp_path: Path) -> None:
    with backends("web1", "web2") as (web1, web2):
        web2.status = 500
        servers = [("web1", "127.0.0.1", web1.port), ("web2", "127.0.0.1", web2.port),
                   ("web3", "127.0.0.1", free_port())]  # fmt: skip
        with running_haproxy(tmp_path, servers) as proxy, httpx.Client(timeout=5) as http:
            runtime = HAProxyRuntime(proxy.runtime_api)
            for name in ("web1", "web2"):
                runtime.wait_for("dhash", name, lambda s: s.up, what="UP", timeout=10)
            runtime.wait_for("dhash", "web3", lambda s: s.status == "DOWN", what="DOWN",
                             timeout=10)  # fmt: skip
            source = HAProxySource(proxy.metrics_url, "dhash", store=SampleStore(), client=http)
            t0 = time.time()
            assert source.collect(t0) is None
            clients = _requests(proxy.url, 40)
            t1 = time.time()
            assert source.collect(t1) is None
            # web1 and web2 fail their checks: no server is up, HAProxy answers 503 itself
            web1.ready.clear()
            web2.ready.clear()
            for name in ("web1", "web2"):
                runtime.wait_for("dhash", name, lambda s: s.status == "DOWN", what="DOWN",
                                 timeout=10)  # fmt: skip
            alone = _requests(proxy.url, 9)
            t2 = time.time()
            assert source.collect(t2) is None

            served = source.window(t0, t1)
            assert served is not None
            assert clients == {200: 20, 500: 20}  # round robin over the two servers up
            assert served.responses["2xx"] == clients[200] == web1.hits
            assert served.responses["5xx"] == clients[500] == web2.hits
            assert dict(served.server_5xx) == {"web1": 0, "web2": 20, "web3": 0}
            rate = source.error_rate(t0, t1)
            assert rate.value == 50.0 and rate.samples == 40
            assert "servers UP 2/3 (web3 DOWN L4CON)" in rate.detail

            proxy_only = source.window(t1, t2)
            assert proxy_only is not None and alone == {503: 9}
            assert proxy_only.responses["5xx"] == 9 == sum(proxy_only.responses.values())
            assert proxy_only.connection_errors == 9  # HAProxy counts them as both
            assert sum(proxy_only.server_5xx.values()) == 0  # no server answered them
            assert "servers UP 0/3" in source.error_rate(t1, t2).detail
            whole = source.error_rate(t0, t2)
            assert whole.samples == 49 and whole.value == pytest.approx(100 * 29 / 49)


FLEET_ENV = """[production]
target = "fleet"
[[production.hosts]]
name = "web1"
address = "10.0.0.11"
[[production.hosts]]
name = "web2"
address = "10.0.0.12"
port = 8000
weight = 50
[production.proxy]
runtime_api = "tcp://127.0.0.1:9999"
url = "http://lb.example"
metrics_address = "127.0.0.1:8405"
"""


def test_release_proxy_config_prints_a_config_haproxy_accepts_with_its_exporter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dhash-environments.toml").write_text(FLEET_ENV)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DHASH_ENVIRONMENTS_FILE", raising=False)
    assert main(["release", "proxy-config", "--env", "production"]) == 0
    text = capsys.readouterr().out
    assert "    bind *:80\n" in text  # proxy.url's port, every address
    assert "stats socket ipv4@127.0.0.1:9999 level admin" in text
    assert "frontend prometheus\n    bind 127.0.0.1:8405\n" in text
    assert "http-request use-service prometheus-exporter if { path /metrics }" in text
    assert "server web2 10.0.0.12:8000 check weight 50" in text
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text)
    check = subprocess.run(
        [HAPROXY, "-c", "-f", str(cfg)], check=False, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    # not a fleet: one line, exit 2, no traceback
    (tmp_path / "dhash-environments.toml").write_text("[production]\n")
    assert main(["release", "proxy-config", "--env", "production"]) == 2
    err = capsys.readouterr().err
    assert "production is not a fleet" in err and "Traceback" not in err
