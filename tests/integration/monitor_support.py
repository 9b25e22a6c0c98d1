"""Shared pieces of the monitor's integration tests: a real `dhash serve` with a fault, real
traffic from the load generator, a gates file for a short time-scaled window, and the run."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dhash_rollout.monitor.ledger import read_rows
from dhash_rollout.monitor.runner import GateMonitor, SourceFactory, scrape_source
from dhash_rollout.notify.model import Severity
from dhash_rollout.runs.monitoring import MonitorRequest, MonitorResult, SystemClock
from tests.support.live_server import ServeProcess, dhash_serve
from tests.support.load import LoadGenerator

TOKEN = "monitor-test-token-5d2e8a"
TIME_SCALE = 120.0  # 10 nominal minutes in 5 s; gate windows 10 and 15 min in 5 and 7.5 s
DURATION_S = 600.0  # nominal


def gates_file(tmp: Path, **overrides: Mapping[str, Any]) -> Path:
    """The production gates, with levels a few seconds of loopback traffic can reach."""
    gates: dict[str, dict[str, Any]] = {
        "healthFailures": {"threshold": 2, "warn": 1, "counting": "consecutive", "noData": "fail"},
        "extractionFailureRate": {
            "threshold": 5.0,
            "warn": 3.0,
            "timeWindow": 10,
            "minSamples": 10,
            "counting": "window",
            "noData": "inconclusive",
        },
        "p95HashTime": {
            "threshold": 250,
            "warn": 200,
            "timeWindow": 15,
            "minSamples": 10,
            "counting": "window",
            "noData": "inconclusive",
        },
        "lowConfidenceQueue": {
            "threshold": 40,
            "warn": 30,
            "counting": "consecutive",
            "noData": "fail",
        },
    }
    for name, changes in overrides.items():
        gates[name] = {**gates[name], **changes}
    data = {
        "version": 1,
        "monitoring": {
            "durationMinutes": 60,
            "pollSchedule": [
                {"untilMinute": 5, "intervalSeconds": 30},
                {"untilMinute": 60, "intervalSeconds": 120},
            ],
        },
        "environments": {"production": gates},
    }
    path = tmp / "gates.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@dataclass
class Events:
    notices: list[tuple[Severity, str]] = field(default_factory=list)
    records: list[str] = field(default_factory=list)

    def record(self, event: str, data: Mapping[str, object]) -> None:
        self.records.append(event)

    def notify(self, severity: Severity, title: str, message: str) -> None:
        self.notices.append((severity, title))

    def stop_requested(self) -> bool:
        return False


@contextmanager
def service(tmp: Path, **faults: str) -> Iterator[ServeProcess]:
    settings = {"DHASH_API_TOKENS": TOKEN}
    settings.update({f"DHASH_FAULT_{k.upper()}": v for k, v in faults.items()})
    with dhash_serve(settings, tmp) as served:
        yield served


def watch(
    served: ServeProcess,
    tmp: Path,
    gates: Path,
    *,
    traffic: bool = True,
    source: SourceFactory = scrape_source,
    duration_s: float = DURATION_S,
    run_id: str = "deploy-test",
    seed_base: int = 0,
) -> tuple[MonitorResult, Events, float]:
    """Monitor ``served`` from now (the switch) under load; the result, events, and seconds."""
    request = MonitorRequest(
        environment="production",
        version=_version(served),
        previous_version=None,
        base_url=served.url,
        window_start=time.time(),
        run_id=run_id,
        log_dir=tmp / "logs",
        gates_file=gates,
        duration_s=duration_s,
        time_scale=TIME_SCALE,
    )
    events = Events()
    started = time.monotonic()
    with (tmp / "view.txt").open("w", encoding="utf-8") as out:
        monitor = GateMonitor(source=source, view="plain", out=out)
        if traffic:
            # New images each run (seed_base): a re-sent image is a duplicate, never re-hashed.
            load = LoadGenerator(
                served.port, TOKEN, threads=3, max_seconds=30, ingest_every=1, seed_base=seed_base
            )
            with load:
                result = monitor.watch(request, events, SystemClock())
        else:
            result = monitor.watch(request, events, SystemClock())
    return result, events, time.monotonic() - started


def _version(_served: ServeProcess) -> str:
    from dhash_service import __version__

    return __version__  # the served checkout's own version: its samples are the new release's


def poll_statuses(result: MonitorResult, gate: str) -> list[str]:
    assert result.ledger_path is not None
    return [
        ev["status"]
        for row in read_rows(result.ledger_path)
        if row["kind"] == "poll"
        for ev in row["evaluations"]
        if ev["gate"] == gate
    ]
