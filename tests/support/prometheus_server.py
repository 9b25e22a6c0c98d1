"""A real Prometheus (Debian's) on 127.0.0.1 for the monitor tests: config written here, a
short scrape interval, its own data directory; stopped by the context manager."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.live_server import free_port, wait_for_process
from tests.support.prometheus_bin import need


@dataclass
class PrometheusServer:
    url: str
    log_path: Path

    def query(self, expr: str) -> list[dict[str, object]]:
        body = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=5).json()
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def wait_scrapes(self, n: int, timeout: float = 20.0) -> None:
        """Until the target has been scraped ``n`` times, and it was up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.query("count_over_time(up[1m])")
            up = self.query("up")
            if got and up and float(got[0]["value"][1]) >= n and up[0]["value"][1] == "1":  # type: ignore[index]
                return
            time.sleep(0.1)
        raise RuntimeError(f"Prometheus did not scrape {n} times:\n{self.log_path.read_text()}")


@contextmanager
def running_prometheus(
    target: str, tmp: Path, *, scrape_interval: str = "200ms"
) -> Iterator[PrometheusServer]:
    port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n"
        f"  scrape_interval: {scrape_interval}\n"
        f"  scrape_timeout: {scrape_interval}\n"
        "scrape_configs:\n"
        "  - job_name: dhash\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n",
        encoding="utf-8",
    )
    log_path = tmp / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [need("prometheus"), f"--config.file={config}",
             f"--storage.tsdb.path={tmp / 'prometheus-data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = PrometheusServer(f"http://127.0.0.1:{port}", log_path)
    try:
        wait_for_process(
            process,
            lambda: httpx.get(f"{server.url}/-/ready", timeout=2).status_code == 200,
            timeout=30,
            what="prometheus",
            log=log_path.read_text,
        )
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
