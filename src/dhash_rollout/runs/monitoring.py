"""The seam between the deploy controller and the post-deploy monitor.

As in Argo Rollouts, the analysis (measure the new release, evaluate the gates) is separate from
the controller that acts on its result: the monitor only returns a :class:`MonitorResult`; the
deploy (or ``dhash monitor`` resuming a guard) decides to roll back, under the lock it holds.
Everything the monitor needs from the run comes through :class:`MonitorRequest` and
:class:`MonitorEvents`, and time through :class:`Clock`, so tests run the 60-minute schedule on a
fake clock.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from dhash_rollout.notify.model import Severity

# How a deploy whose window ended while no monitor ran is shown (``release status``,
# ``check daily``, the verdict's reason): never as verified.
CUT_SHORT = "monitoring interrupted — not verified"


class Verdict(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    INCONCLUSIVE = "inconclusive"
    INTERRUPTED = "interrupted"


class Clock(Protocol):
    """Wall time in epoch seconds and a sleep that a fake clock can advance instantly."""

    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@dataclass(frozen=True)
class MonitorRequest:
    """What the deploy knows when its monitor phase starts."""

    environment: str
    version: str
    previous_version: str | None
    base_url: str
    # Epoch seconds of the switch: samples before it belong to the old release.
    window_start: float
    run_id: str
    log_dir: Path
    gates_file: Path | None = None  # None: the environment's / the checkout's quality-gates file
    duration_s: float | None = None  # None: the gates config's monitoring.durationMinutes
    time_scale: float = 1.0  # N: the same schedule N times faster (demos, tests); said on screen
    api_token: str | None = None  # a read-scope token, when the service's reads need one
    # A fleet's view: (host, base URL) of every host, whose own /metrics the gates sum (the
    # health gate still probes base_url, the proxy). Empty: base_url's /metrics.
    fleet_hosts: tuple[tuple[str, str], ...] = ()
    # The fleet's HAProxy exporter (``ProxySettings.metrics_url``) and its backend: with
    # fleet_hosts, ``proxyErrorRate`` is read there (what the clients got through the proxy).
    proxy_metrics_url: str | None = None
    proxy_backend: str = "dhash"


@dataclass(frozen=True)
class GateEvidence:
    """One gate's state when the verdict was reached: enough to answer "why did it roll back?"."""

    gate: str
    status: str  # ok / warn / fail / no-data / error
    value: float | None
    threshold: float
    warn: float | None = None
    window_s: float | None = None
    samples: int = 0
    polls: int = 0
    detail: str = ""


@dataclass(frozen=True)
class MonitorResult:
    verdict: Verdict
    reason: str  # one line: the gate that failed and its value, or which gates had no data
    failed_gate: str | None = None
    evidence: tuple[GateEvidence, ...] = ()
    polls: int = 0
    report_path: Path | None = None
    ledger_path: Path | None = None
    extra: Mapping[str, object] = field(default_factory=dict)


class MonitorEvents(Protocol):
    """The run's side of the seam: journal writes and notices go through the run context."""

    def record(self, event: str, data: Mapping[str, object]) -> None: ...

    def notify(self, severity: Severity, title: str, message: str) -> None: ...

    def stop_requested(self) -> bool: ...


class DeployMonitor(Protocol):
    def watch(
        self, request: MonitorRequest, events: MonitorEvents, clock: Clock
    ) -> MonitorResult: ...
