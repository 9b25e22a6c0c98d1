"""``GateMonitor``: the deploy's monitor phase (a :class:`DeployMonitor`), and ``dhash monitor``.

Polls on the cadence from the moment it starts watching (right after the deploy's smoke tests;
kept in the ledger, so a re-run keeps the same schedule) and counts every sample since
``window_start`` (the switch) and none before it. Measures each gate from its source,
folds it into the gate's state (:mod:`gates`), and appends every evaluation to the ledger and
the log. It returns as soon as a gate fails (the controller rolls back), at the end of the
window, or when the run asks it to stop (INTERRUPTED). Re-run for the same ``run_id`` it reads
its ledger (and the scrape samples it kept) back and continues the same window where it
stopped; a run that already reached a verdict returns that verdict again without polling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import httpx

from dhash_rollout.monitor.cadence import Step, poll_offsets
from dhash_rollout.monitor.gates import (
    Evaluation,
    GateState,
    Measurement,
    Status,
    conclude,
    recorded,
    step,
)
from dhash_rollout.monitor.gates_config import (
    EnvironmentGates,
    GateName,
    GatesConfig,
    load_gates_config,
)
from dhash_rollout.monitor.ledger import Ledger, LedgerFiles, files_for
from dhash_rollout.monitor.proxy_source import ProxiedFleetSource
from dhash_rollout.monitor.report import write_report
from dhash_rollout.monitor.sources import (
    FleetScrapeSource,
    MetricSource,
    PrometheusSource,
    ReadsProxy,
    SampleStore,
    ScrapeSource,
    probe_health,
)
from dhash_rollout.monitor.view import LogFile, MonitorView, make_view, plain_line
from dhash_rollout.notify.model import Severity
from dhash_rollout.runs.monitoring import (
    CUT_SHORT,
    Clock,
    GateEvidence,
    MonitorEvents,
    MonitorRequest,
    MonitorResult,
    Verdict,
)

DEFAULT_GATES_FILE = Path("quality-gates-config.json")
STOP_CHECK_S = 0.25  # how often a wait looks at events.stop_requested()

SourceFactory = Callable[[MonitorRequest, LedgerFiles], MetricSource]


def scrape_source(request: MonitorRequest, files: LedgerFiles) -> MetricSource:
    if request.fleet_hosts and request.proxy_metrics_url:
        return ProxiedFleetSource(
            dict(request.fleet_hosts), request.proxy_metrics_url, request.proxy_backend,
            store=SampleStore(files.samples),
        )  # fmt: skip
    if request.fleet_hosts:
        return FleetScrapeSource(dict(request.fleet_hosts), store=SampleStore(files.samples))
    return ScrapeSource(
        request.base_url, version=request.version or None, store=SampleStore(files.samples)
    )


def prometheus_source(url: str) -> SourceFactory:
    def make(_request: MonitorRequest, _files: LedgerFiles) -> MetricSource:
        return PrometheusSource(url)

    return make


@dataclass(frozen=True)
class Plan:
    """The run's schedule, scaled: poll offsets and each gate's window, in real seconds."""

    duration_s: float
    offsets: list[float]
    gate_window_s: dict[GateName, float]


def plan_for(config: GatesConfig, gates: EnvironmentGates, request: MonitorRequest) -> Plan:
    scale = request.time_scale
    nominal = request.duration_s or config.monitoring.duration_minutes * 60
    steps = [Step(s.until_minute * 60, s.interval_seconds) for s in config.monitoring.poll_schedule]
    windows = {
        name: (gate.time_window * 60 if gate.time_window else nominal) / scale
        for name, gate in gates.items()
    }
    return Plan(nominal / scale, poll_offsets(steps, nominal, scale), windows)


class GateMonitor:
    """A :class:`~dhash_rollout.runs.monitoring.DeployMonitor` over real metrics."""

    def __init__(
        self,
        *,
        source: SourceFactory = scrape_source,
        gates_file: Path | None = None,
        view: str = "auto",
        out: TextIO | None = None,
        on_poll: Callable[[float], None] | None = None,
    ) -> None:
        self.source_factory = source
        self.gates_file = gates_file
        self.view_kind = view
        self.out = out
        # After each poll (its time): e.g. the escalation of unacknowledged alerts while the
        # monitor is alive. Its failure is logged, never a reason to stop watching.
        self.on_poll = on_poll

    def watch(self, request: MonitorRequest, events: MonitorEvents, clock: Clock) -> MonitorResult:
        path = request.gates_file or self.gates_file or DEFAULT_GATES_FILE
        config = load_gates_config(path, environment=request.environment)
        gates = config.for_environment(request.environment, path)
        files = files_for(
            request.log_dir, request.environment, request.window_start, request.run_id
        )
        ledger = Ledger.open(files.ledger)
        started = next(iter(ledger.of_kind("start")), None)
        if started is not None:  # a continuation keeps the schedule it began with
            scale = float(started.get("time_scale", request.time_scale))
            nominal = float(started.get("duration_s", 0.0)) * scale or request.duration_s
            request = replace(request, time_scale=scale, duration_s=nominal)
        plan = plan_for(config, gates, request)
        done = ledger.of_kind("verdict")
        if done and done[-1]["verdict"] != Verdict.INTERRUPTED.value:
            return _result_from(ledger, files)
        run = _Run(
            self,
            request=request,
            events=events,
            clock=clock,
            config=config,
            gates=gates,
            plan=plan,
            files=files,
            ledger=ledger,
        )
        return run.go()


class _Run:
    """One monitoring run (or its continuation): the loop and what it writes."""

    def __init__(
        self,
        monitor: GateMonitor,
        *,
        request: MonitorRequest,
        events: MonitorEvents,
        clock: Clock,
        config: GatesConfig,
        gates: EnvironmentGates,
        plan: Plan,
        files: LedgerFiles,
        ledger: Ledger,
    ) -> None:
        self.request, self.events, self.clock = request, events, clock
        self.config, self.gates, self.plan = config, gates, plan
        self.files, self.ledger = files, ledger
        self.source = monitor.source_factory(request, files)
        # The gates this run evaluates: the proxy's only with a source that reads a proxy.
        self.active = gates.items(proxy=isinstance(self.source, ReadsProxy))
        self.on_poll = monitor.on_poll
        self.log = LogFile(files.log)
        title = f"dhash monitor {request.environment} {request.version}"
        self.view: MonitorView = make_view(monitor.view_kind, title, monitor.out)
        first = plan.offsets[0] if plan.offsets else 1.0
        # A health check slower than this is non-OK; at least 1 s even time-scaled, so a busy
        # machine is not mistaken for a dead service (late polls just run at once).
        self.http = httpx.Client(timeout=max(1.0, min(5.0, first)))
        self.states = {name: GateState() for name in GateName}
        self.last: dict[GateName, Evaluation] = {}
        self.polls = 0
        self.origin = request.window_start  # where the poll schedule starts (see _loop)

    # --- the loop ------------------------------------------------------------------------------

    def go(self) -> MonitorResult:
        try:
            return self._loop()
        finally:
            self.view.close()
            self.log.close()
            self.http.close()
            self.source.close()

    def _loop(self) -> MonitorResult:
        request = self.request
        resumed = self._resume()
        first = next(iter(self.ledger.of_kind("start")), None)
        if first is None:
            # The schedule runs from now: the phases after the switch (health, smoke) do not eat
            # into the window, which matters when it is time-scaled; samples count from the
            # switch all the same.
            self.origin = max(request.window_start, self.clock.now())
            self._start_row()
        else:
            self.origin = float(first.get("schedule_start", request.window_start))
        start = self.origin
        self.events.record(
            "monitor.started",
            {
                "ledger": str(self.files.ledger),
                "log": str(self.files.log),
                "resumed": resumed,
                "source": self.source.name,
                "window_start": request.window_start,
                "window_end": self.origin + self.plan.duration_s,
            },
        )
        if request.time_scale != 1:
            self._say(
                f"time scale {request.time_scale:g}: the schedule runs "
                f"{request.time_scale:g} times faster"
            )
        if resumed and self.clock.now() > self.origin + self.plan.duration_s:
            last = max(float(r["offset"]) for r in self.ledger.of_kind("poll"))
            reason = (
                f"{CUT_SHORT}: no monitor ran from t+{last:.0f}s to the end of the window "
                f"(t+{self.plan.duration_s:.0f}s)"
            )
            return self._finish(Verdict.INCONCLUSIVE, reason, None)
        self.source.collect(self.clock.now())  # the baseline sample, before the first poll
        for offset in self._pending(resumed):
            if not self._wait_until(start + offset):
                return self._finish(Verdict.INTERRUPTED, "monitoring was stopped", None)
            failed = self._poll(offset)
            if failed is not None:
                ev = self.last[failed]
                reason = f"{failed.value} = {_show(ev.value)} > {ev.threshold:g}: {ev.detail}"
                return self._finish(Verdict.FAILED, reason, failed)
        conclusion = conclude(
            self.active,
            self.states,
            inconclusive_fails=self.config.monitoring.inconclusive_fails,
        )
        failed_gate = conclusion.failed_gate
        return self._finish(conclusion.verdict, conclusion.reason, failed_gate)

    def _pending(self, resumed: bool) -> list[float]:
        """Offsets still to poll. A fresh run polls each one (late by the start-up only); a
        resumed run that missed several while it was down takes one catch-up poll for them."""
        done = [float(r["offset"]) for r in self.ledger.of_kind("poll")]
        todo = [o for o in self.plan.offsets if not done or o > max(done) + 1e-9]
        if not resumed:
            return todo
        now = self.clock.now() - self.origin
        past = [o for o in todo if o <= now]
        return past[-1:] + [o for o in todo if o > now]

    def _wait_until(self, target: float) -> bool:
        while True:
            if self.events.stop_requested():
                return False
            left = target - self.clock.now()
            if left <= 0:
                return True
            self.clock.sleep(min(left, STOP_CHECK_S))

    def _poll(self, offset: float) -> GateName | None:
        at = self.clock.now()
        error = self.source.collect(at)
        measured = self._measure(at, error)
        evaluations = []
        for name, gate in self.active:
            counting = self.plan.gate_window_s[name]
            state, ev = step(
                name,
                gate,
                self.states[name],
                measured[name],
                at=at,
                counting_window_s=counting,
                error_limit=self.config.monitoring.consecutive_error_limit,
            )
            self.states[name] = state
            self.last[name] = ev
            evaluations.append(ev)
        self.polls += 1
        self.ledger.append(
            "poll", {"offset": offset, "at": at, "evaluations": [ev.to_row() for ev in evaluations]}
        )
        left = self.plan.duration_s - offset
        self.log.write(plain_line(offset, left, evaluations))
        self.view.poll(offset, left, evaluations)
        for ev in evaluations:
            if ev.newly_warned:
                self._notice(
                    Severity.WARN,
                    f"{ev.gate.value} crossed its warn level",
                    f"{ev.gate.value} = {_show(ev.value)} > warn {ev.warn:g} "
                    f"(threshold {ev.threshold:g}) on {self.request.environment}",
                )
        if self.on_poll is not None:
            try:
                self.on_poll(at)
            except Exception as exc:  # the hook's trouble is not the gates' trouble
                self._say(f"after-poll hook failed: {exc!r}")
        return next((ev.gate for ev in evaluations if ev.status is Status.FAIL), None)

    def _measure(self, at: float, error: str | None) -> dict[GateName, Measurement]:
        health = probe_health(self.http, self.request.base_url)
        start = self.request.window_start

        def window(name: GateName) -> float:
            return max(start, at - self.plan.gate_window_s[name])

        proxied: dict[GateName, Measurement] = {}
        proxy = GateName.PROXY_ERROR_RATE
        if isinstance(self.source, ReadsProxy) and proxy in dict(self.active):
            # its own scrape: its own error, if any (an exporter down blinds no host gate)
            proxied[proxy] = self.source.proxy_error_rate(window(proxy), at)
        if error is not None:
            failed = Measurement(None, error=error)
            return {
                GateName.HEALTH_FAILURES: health,
                GateName.EXTRACTION_FAILURE_RATE: failed,
                GateName.P95_HASH_TIME: failed,
                GateName.LOW_CONFIDENCE_QUEUE: failed,
                **proxied,
            }
        rate, p95 = GateName.EXTRACTION_FAILURE_RATE, GateName.P95_HASH_TIME
        return {
            GateName.HEALTH_FAILURES: health,
            rate: self.source.failure_rate(window(rate), at),
            p95: self.source.hash_p95_ms(window(p95), at),
            GateName.LOW_CONFIDENCE_QUEUE: self.source.queue_length(at),
            **proxied,
        }

    # --- memory: the ledger --------------------------------------------------------------------

    def _start_row(self) -> None:
        r = self.request
        self.ledger.append(
            "start",
            {
                "run_id": r.run_id,
                "environment": r.environment,
                "version": r.version,
                "previous_version": r.previous_version,
                "base_url": r.base_url,
                "window_start": r.window_start,
                "schedule_start": self.origin,
                "window_end": self.origin + self.plan.duration_s,
                "duration_s": self.plan.duration_s,
                "time_scale": r.time_scale,
                "source": self.source.name,
                "offsets": self.plan.offsets,
                "gates": {n.value: g.model_dump(by_alias=True) for n, g in self.active},
            },
        )

    def _resume(self) -> bool:
        """Fold the ledger's polls back into the gates' states; True if there were any."""
        polls = self.ledger.of_kind("poll")
        active = dict(self.active)
        for row in polls:
            for item in row["evaluations"]:
                name = GateName(item["gate"])
                if name not in active:  # a gate this run's configuration no longer evaluates
                    continue
                measured = recorded(item)
                self.states[name], self.last[name] = step(
                    name,
                    active[name],
                    self.states[name],
                    measured,
                    at=float(item["at"]),
                    counting_window_s=self.plan.gate_window_s[name],
                    error_limit=self.config.monitoring.consecutive_error_limit,
                )
        self.polls = len(polls)
        if polls:
            self._say(
                f"resuming {self.request.run_id}: {len(polls)} polls already in {self.files.ledger}"
            )
        return bool(polls)

    def _notice(self, severity: Severity, title: str, message: str) -> None:
        self.ledger.append(
            "notice",
            {"severity": severity.name, "title": title, "message": message, "at": self.clock.now()},
        )
        self.log.write(f"{severity.name}: {title}: {message}")
        self.view.say(f"{severity.name}: {title}: {message}")
        self.events.notify(severity, title, message)

    def _say(self, line: str) -> None:
        self.log.write(line)
        self.view.say(line)

    def _finish(self, verdict: Verdict, reason: str, failed: GateName | None) -> MonitorResult:
        evidence = [_evidence(ev, self.states[ev.gate].polls) for ev in self.last.values()]
        self.ledger.append(
            "verdict",
            {
                "verdict": verdict.value,
                "reason": reason,
                "failed_gate": failed.value if failed else None,
                "at": self.clock.now(),
                "polls": self.polls,
                "evidence": [e.__dict__ for e in evidence],
            },
        )
        write_report(self.files.ledger, self.files.report)
        self.events.record(
            "monitor.verdict",
            {
                "verdict": verdict.value,
                "reason": reason,
                "failed_gate": failed.value if failed else None,
                "polls": self.polls,
                "report": str(self.files.report),
                "evidence": [e.__dict__ for e in evidence],
            },
        )
        self._say(f"verdict {verdict.value.upper()}: {reason}")
        self._say(f"report: {self.files.report}")
        return _result_from(self.ledger, self.files)


def _show(value: float | None) -> str:
    return "no data" if value is None else f"{value:.4g}"


def _evidence(ev: Evaluation, polls: int) -> GateEvidence:
    return GateEvidence(
        gate=ev.gate.value,
        status=ev.status.value,
        value=ev.value,
        threshold=ev.threshold,
        warn=ev.warn,
        window_s=ev.window_s,
        samples=ev.samples,
        polls=polls,
        detail=ev.detail,
    )


def _result_from(ledger: Ledger, files: LedgerFiles) -> MonitorResult:
    row = ledger.of_kind("verdict")[-1]
    evidence: Sequence[dict[str, Any]] = row.get("evidence", [])
    return MonitorResult(
        verdict=Verdict(row["verdict"]),
        reason=str(row["reason"]),
        failed_gate=row.get("failed_gate"),
        evidence=tuple(GateEvidence(**e) for e in evidence),
        polls=int(row.get("polls", 0)),
        report_path=files.report,
        ledger_path=files.ledger,
        extra={"log_path": str(files.log)},
    )
