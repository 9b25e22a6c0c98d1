"""``dhash deploy --env E`` on a fleet (``target = "fleet"``): the run around the waves.

Under the environment's lock and one journaled :class:`~dhash_rollout.runs.context.RunContext`,
as a single-host deploy: the backup and the migrations run *once* (the database is shared),
the release is installed everywhere before anything switches (inert), then the waves:

1. ``backup`` of the shared database (verified);
2. ``install``: the controller's copy (what the migrations run from) and every host's;
3. ``migrate``: the *expand* revisions, before the first wave (old and new releases then
   serve side by side on the expanded schema);
4. ``waves``: :class:`~dhash_rollout.deploy.fleet.WaveExecutor` (drain, switch, check, put
   back; the failure budget per wave; the monitor's gates per host and for the fleet between
   waves); a stop switches every touched host back and leaves the others alone;
5. ``migrate_contract``: the *contract* revisions, once no old release serves.

Every host's state is journaled (``host:<name>``), so a killed controller is picked up by the
next ``dhash deploy`` of the environment: the same version resumes (the hosts already on it
are skipped, ``plan_waves(done=...)``), another version first undoes the interrupted run
(``hosts_to_undo``: every touched host back on what it served, untouched hosts left alone).
``--dry-run`` prints the wave plan and runs nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dhash_rollout.backup import create_backup
from dhash_rollout.deploy.fleet import FleetOutcome, WaveExecutor, WaveGate, host_states
from dhash_rollout.deploy.run import (
    DRY_RUN_LOG,
    DeployRequest,
    DeployResult,
    release_source,
    resolve_release,
)
from dhash_rollout.deploy.waves import HostState, Migration, Wave, WavePlan, plan_waves
from dhash_rollout.environments import Environment, api_token, load_environment
from dhash_rollout.releases import Release, ReleaseSource
from dhash_rollout.runs.context import RunContext, deploy_run_context
from dhash_rollout.runs.events import RunEvents
from dhash_rollout.runs.journal import Journal, RunState, Status, new_run_id
from dhash_rollout.runs.locking import hold_lock
from dhash_rollout.runs.monitoring import (
    DeployMonitor,
    MonitorRequest,
    MonitorResult,
    SystemClock,
    Verdict,
)
from dhash_rollout.runs.notices import notify
from dhash_rollout.runs.paths import lock_path
from dhash_rollout.runs.plan import Phase, Plan, Step, render_plan
from dhash_rollout.runs.schema import (
    database_revision,
    migrate_with,
    pending_migration_steps,
    release_cli,
)
from dhash_rollout.targets.fleet.hosts import FleetHosts
from dhash_rollout.targets.fleet.target import FleetTarget
from dhash_service.errors import CheckFailed, DhashError

Say = Callable[[str], None]
# The gate over the whole fleet: health through the proxy, every host's sum, and the proxy's
# own exporter (proxyErrorRate) when its settings name one.
FLEET_GATE = "fleet"


def gate_verdict(results: Mapping[str, MonitorResult], inconclusive: str) -> str | None:
    """The wave's gate from the monitor's verdict on each of its hosts and on the fleet: None
    passes; else the reason, naming each one that failed (an inconclusive one only with the
    environment's ``monitor_inconclusive = "fail"``; an interrupted one always: not verified)."""
    failed = []
    for name, result in results.items():
        stop = result.verdict in (Verdict.FAILED, Verdict.INTERRUPTED) or (
            result.verdict is Verdict.INCONCLUSIVE and inconclusive == "fail"
        )
        if stop:
            failed.append(f"{name}: {result.verdict} ({result.reason})")
    return "; ".join(failed) or None


@dataclass
class MonitorGate:
    """The monitor between waves: one window per host of the wave (its own ``/metrics``) and
    one for the fleet (health through the proxy, the gates over every host's own metrics:
    :class:`~dhash_rollout.monitor.sources.FleetScrapeSource`, and with
    ``proxy.metrics_address`` the proxy's 5xx share from HAProxy's exporter:
    :class:`~dhash_rollout.monitor.proxy_source.ProxiedFleetSource`), watched at the same
    time."""

    monitor: DeployMonitor
    ctx: RunContext
    target: FleetTarget
    version: str
    previous_version: str | None
    time_scale: float

    def _request(self, wave: Wave, name: str, url: str) -> MonitorRequest:
        env = self.ctx.env
        fleet = (
            tuple((h, host.url) for h, host in self.target.hosts.hosts.items())
            if name == FLEET_GATE
            else ()
        )
        proxy = self.target.proxy  # its exporter, when it names one: proxyErrorRate
        metrics = proxy.metrics_url if name == FLEET_GATE else None
        return MonitorRequest(
            environment=env.name, version=self.version, previous_version=self.previous_version,
            base_url=url, window_start=time.time(),
            run_id=f"{self.ctx.run_id}-wave{wave.number}-{name}", log_dir=self.log_dir(name),
            duration_s=self.target.waves.gate_seconds, time_scale=self.time_scale,
            api_token=api_token(env), fleet_hosts=fleet, proxy_metrics_url=metrics,
            proxy_backend=proxy.backend,
        )  # fmt: skip

    def log_dir(self, name: str) -> Path:
        """Each watched host's (and the fleet's) own directory of monitor ledgers: the
        watches start in the same second, and ledgers are named by it (``monitor_<env>_<ts>``);
        in one directory concurrent watches could pick the same ledger (seen: two of three
        gate results lost)."""
        return self.ctx.log_dir / "fleet-gates" / name

    def __call__(self, wave: Wave) -> str | None:
        urls = {h: self.target.hosts.hosts[h].url for h in wave.hosts}
        if self.target.proxy.url:
            urls[FLEET_GATE] = self.target.proxy.url
        results: dict[str, MonitorResult] = {}
        errors: dict[str, str] = {}

        def watch(name: str, url: str) -> None:
            events = RunEvents(self.ctx, Phase.WAVES)
            try:
                request = self._request(wave, name, url)
                results[name] = self.monitor.watch(request, events, SystemClock())
            except DhashError as exc:
                errors[name] = exc.message
            except Exception as exc:  # a watch that crashed has not verified anything
                errors[name] = f"{type(exc).__name__}: {exc}"

        threads = [threading.Thread(target=watch, args=item) for item in urls.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        verdict = gate_verdict(results, self.ctx.env.settings.monitor_inconclusive)
        seen = {
            name: {"verdict": str(r.verdict), "reason": r.reason} for name, r in results.items()
        }
        status: Status = "failed" if verdict or errors else "done"
        self.ctx.record(f"gate:{wave.number}", status, {**seen, "errors": errors})
        problems = [verdict] if verdict else []
        problems += [f"{name}: the monitor failed: {why}" for name, why in errors.items()]
        return "; ".join(problems) or None


def wave_plan(
    target: FleetTarget,
    release: Release | None,
    revision: str | None,
    done: list[str],
    *,
    backup: bool = True,
) -> WavePlan:
    pending = (
        [Migration(rev, contract) for rev, contract in pending_migration_steps(release, revision)]
        if release is not None
        else []
    )
    waves = target.waves
    return plan_waves(
        [h.name for h in target.host_list], waves.sizes, waves.max_fail_percentage,
        pending=pending, done=done, backup=backup,
    )  # fmt: skip


def as_plan(env: Environment, version: str, waves: WavePlan, *, installed: bool) -> Plan:
    """The wave plan as the deploy's :class:`Plan` (the text ``--dry-run`` prints)."""
    lines = waves.lines()
    steps = [Step(Phase.LOCK, f"take the deploy lock of {env.name}")]
    steps.append(
        Step(Phase.BACKUP, lines[0], run=waves.backup, reason=None if waves.backup else "asked")
    )
    steps.append(Step(Phase.INSTALL, f"install {version} on the controller and every host"))
    expand = waves.expand
    steps.append(
        Step(
            Phase.MIGRATE,
            f"migrate (expand) to {expand[-1]}: {', '.join(expand)}" if expand else "migrate",
            run=bool(expand) or not installed,
            reason=None if expand or not installed else "no expand revision pending",
        )
    )
    for wave in waves.waves:
        steps.append(
            Step(
                Phase.WAVES,
                f"wave {wave.number}: {', '.join(wave.hosts)} (drain, switch, /health and "
                f"/ready, put back; stops after {wave.tolerated_failures + 1} failed)",
            )
        )
    contract = waves.contract
    action = "migrate (contract)"
    if contract:
        action = f"migrate (contract) to {contract[-1]}: {', '.join(contract)}"
    reason = None if contract else "no contract revision pending"
    steps.append(Step(Phase.CONTRACT, action, run=bool(contract), reason=reason))
    warnings: tuple[str, ...] = ()
    if not installed:
        warnings += (f"{version} is not installed yet: its migrations are read once it is",)
    if waves.skipped:
        warnings += (f"already on {version}: {', '.join(waves.skipped)}",)
    return Plan("deploy", env.name, version, tuple(steps), warnings)


def run_migrations(
    release: Release, env: Environment, base: Path, detail: dict[str, Any], to: str | None,
    *, contract: bool,
) -> None:  # fmt: skip
    """The shared database's migrations from ``release``: up to ``to`` only (the expand
    revisions, before the first wave) when contract revisions follow, else all of them (the
    fleet deploy's and the fleet canary's, before and after their waves)."""
    detail["from_revision"] = database_revision(env.database_url)
    if to is not None and contract:  # expand only: stop below the contract revisions
        release_cli(release, env, base, "migrate", "--env", env.name, "--to", to)
    else:
        migrate_with(release, env, base, None)
    detail["to_revision"] = database_revision(env.database_url)


def _ready_hosts(run: RunState, hosts: list[str]) -> list[str]:
    return [h for h, s in host_states(run, hosts).items() if s == HostState.READY]


def dry_run(request: DeployRequest, env: Environment, target: FleetTarget) -> DeployResult:
    version, source = resolve_release(request, target)
    release = target.release(version)
    last = Journal.for_root(env.root).last_run("deploy")
    resume = last if last and not last.finished and last.params.get("version") == version else None
    names = [h.name for h in target.host_list]
    done = _ready_hosts(resume, names) if resume else []
    waves = wave_plan(target, release, database_revision(env.database_url), done)
    plan = as_plan(env, version, waves, installed=release is not None)
    log_path = request.base / DRY_RUN_LOG
    footer = (
        f"# dhash deploy --dry-run --env {env.name} (fleet) at {datetime.now(UTC).isoformat()}; "
        f"release source: {source.describe() if source else 'the installed release'}\n"
    )
    log_path.write_text(render_plan(plan) + footer, encoding="utf-8")
    resumed = resume.deploy_id if resume else None
    return DeployResult(None, env.name, version, True, plan, log_path, resumed)


def undo_interrupted(
    run: RunState, hosts: FleetHosts, names: list[str], journal: Journal, say: Say
) -> FleetOutcome:
    """Put back what an interrupted fleet deploy touched, from its journal: every host not
    pending nor already back goes back to the release it served before the run (its
    ``from_versions``); hosts it never touched are left alone. The run is closed as failed."""
    states = host_states(run, names)
    previous = dict(run.params.get("from_versions") or {})

    def record(phase: str, status: Status, detail: Mapping[str, Any]) -> None:
        journal.append(run.deploy_id, phase, status, detail)

    version = str(run.params.get("version"))
    executor = WaveExecutor(hosts, record, version, previous, states=states)
    undone, problems = executor.undo(0)
    outcome = FleetOutcome(
        not problems, dict(executor.states), 0, "undone after the controller stopped",
        undone=undone, undo_failures=problems,
    )  # fmt: skip
    journal.append(
        run.deploy_id, "run", "failed",
        {"error": "interrupted, then undone", "undone": list(undone), "not_undone": problems},
    )  # fmt: skip
    say(f"undid the interrupted deploy {run.deploy_id}: {outcome.summary()}")
    return outcome


class FleetDeploy:
    def __init__(
        self,
        ctx: RunContext,
        request: DeployRequest,
        target: FleetTarget,
        params: dict[str, Any],
        *,
        resume: RunState | None,
        monitor: DeployMonitor | None,
    ) -> None:
        self.ctx = ctx
        self.request = request
        self.target = target
        self.params = params
        self.resume = resume
        self.monitor = monitor
        self.version = str(params["version"])
        self.release: Release | None = target.release(self.version)
        self.outcome: FleetOutcome | None = None

    def _done(self, phase: Phase) -> bool:
        return self.resume is not None and self.resume.status_of(phase) == "done"

    def _step(self, step: Step, body: Callable[[dict[str, Any]], None]) -> None:
        if not step.run:
            self.ctx.skip(step)
            return
        # Once per run: the shared database's backup, and the install (inert, on every host).
        if step.phase in (Phase.BACKUP, Phase.INSTALL) and self._done(step.phase):
            self.ctx.skip(Step(step.phase, step.action, False, "done before the interruption"))
            return
        with self.ctx.phase(step) as detail:
            body(detail)

    def run(self) -> Plan:
        """Run every phase; raises the first failure (after journaling it)."""
        env = self.ctx.env
        backup = Step(Phase.BACKUP, "backup the shared database")
        self._step(backup, self._backup)
        self._step(Step(Phase.INSTALL, f"install {self.version} everywhere"), self._install)
        names = [h.name for h in self.target.host_list]
        done = _ready_hosts(self.resume, names) if self.resume else []
        served = dict(self.params.get("from_versions") or {})
        done += [h for h in names if served.get(h) == self.version and h not in done]
        revision = database_revision(env.database_url)
        waves = wave_plan(self.target, self.release, revision, done)
        plan = as_plan(env, self.version, waves, installed=True)
        for line in waves.lines():
            self.ctx.say(f"    {line}")
        expand = plan.step(Phase.MIGRATE)
        to = waves.expand[-1] if waves.expand else None
        self._step(expand, lambda d: self._migrate(d, to, contract=bool(waves.contract)))
        self._step(Step(Phase.WAVES, f"{len(waves.waves)} waves"), lambda d: self._waves(d, waves))
        contract = plan.step(Phase.CONTRACT)
        self._step(contract, lambda d: self._migrate(d, None, contract=False))
        return plan

    def _backup(self, detail: dict[str, Any]) -> None:
        info = create_backup(self.ctx.env, self.ctx.backup_dir)
        detail.update(path=str(info.path), sha256=info.sha256, schema=info.schema_revision)

    def _install(self, detail: dict[str, Any]) -> None:
        """Idempotent: a resumed run installs again, finding the release already there."""
        source = release_source(self.request)
        if source is None:  # --version of a release the controller has: its kept wheel
            if self.release is None:
                raise CheckFailed(f"release {self.version} is not installed: pass --source")
            source = ReleaseSource("wheel", str(self.release.path / self.release.wheel))
        settings = self.params.get("release_settings")
        self.release = self.target.install(
            source, version=self.version, progress=lambda m: self.ctx.say(f"    {m}"),
            settings=settings,
        )  # fmt: skip
        detail.update(hosts=[h.name for h in self.target.host_list], wheel=self.release.wheel)

    def _migrate(self, detail: dict[str, Any], to: str | None, *, contract: bool) -> None:
        assert self.release is not None
        run_migrations(self.release, self.ctx.env, self.request.base, detail, to, contract=contract)

    def _waves(self, detail: dict[str, Any], waves: WavePlan) -> None:
        previous = dict(self.params["from_versions"])
        names = [h.name for h in self.target.host_list]
        states = host_states(self.resume, names) if self.resume else {}
        gate: WaveGate | None = None
        if self.monitor is not None:
            gate = MonitorGate(
                self.monitor, self.ctx, self.target, self.version,
                self.params.get("from_version"), self.request.monitor_time_scale,
            )  # fmt: skip
        executor = WaveExecutor(
            self.target.hosts, self.ctx.record, self.version, previous, gate=gate, states=states
        )
        self.outcome = outcome = executor.run(waves)
        detail.update(
            states={h: str(s) for h, s in outcome.states.items()},
            failures=outcome.failures, undone=list(outcome.undone),
            not_undone=outcome.undo_failures,
        )  # fmt: skip
        if not outcome.ok:
            raise CheckFailed(outcome.summary())
        if outcome.failures:
            self.ctx.say(f"    within the failure budget, left drained: {outcome.failures}")


def deploy_fleet(
    request: DeployRequest,
    say: Say | None = None,
    *,
    monitor: DeployMonitor | None = None,
    on_undone: Callable[[Environment, RunState], None] | None = None,
) -> DeployResult:
    """``on_undone``: told of an interrupted run of another kind (an open canary) once this
    deploy has undone and closed it, so its own state can say so at once."""
    progress = say or (lambda _m: None)
    env = load_environment(request.env, request.base)
    target = FleetTarget(env)
    if request.dry_run:
        return dry_run(request, env, target)
    if api_token(env) is None:
        raise CheckFailed(
            f"{env.name} names no API token, so the hosts' write endpoints would refuse every "
            f"request: set api_token in [{env.name}] of dhash-environments.toml"
        )
    dirs = request.settings.work_dirs(request.base)
    journal = Journal.for_root(env.root)
    with hold_lock(lock_path(env), "deploy") as held:
        version, _source = resolve_release(request, target)
        last = journal.last_run()
        resume: RunState | None = None
        if last is not None and not last.finished:
            if last.kind == "deploy" and last.params.get("version") == version:
                resume = last
            elif last.kind == "rollback":  # its hosts may be stopped around a restore
                raise CheckFailed(
                    f"the rollback {last.deploy_id} was interrupted: run `dhash rollback --env "
                    f"{env.name} --reason ...` again to finish it"
                )
            else:
                progress(f"the interrupted {last.kind} {last.deploy_id} is undone first")
                names = [h.name for h in target.host_list]
                undo_interrupted(last, target.hosts, names, journal, progress)
                closed = journal.run(last.deploy_id)
                if on_undone is not None and closed is not None:
                    on_undone(env, closed)
        run_id = resume.deploy_id if resume else new_run_id("deploy")
        with deploy_run_context(
            env, target, journal, run_id, base=request.base, dirs=dirs, say=progress, lock=held,
            log_path=request.log_path,
        ) as ctx:  # fmt: skip
            if resume is not None:
                params = dict(resume.params)
                progress(f"deploy {env.name} {version} [{run_id}]: resuming the interrupted run")
            else:
                served = target.served()
                common = set(served.values())
                params = {
                    "env": env.name, "version": version, "target": "fleet",
                    "from_versions": served,
                    "from_version": common.pop() if len(common) == 1 else None,
                    "from_revision": database_revision(env.database_url),
                    "initiator": request.initiator, "no_monitor": monitor is None,
                    "release_settings": request.release_settings,
                }  # fmt: skip
                ctx.start(params)
                progress(f"deploy {env.name} {version} [{run_id}] to {len(served)} hosts")
            ctx.record(Phase.LOCK, "done", {"holder": held.holder})
            runner = FleetDeploy(ctx, request, target, params, resume=resume, monitor=monitor)
            return _finish(ctx, runner, ctx.log_path)


def _finish(ctx: RunContext, runner: FleetDeploy, log_path: Path | None) -> DeployResult:
    version = runner.version
    plan = Plan("deploy", ctx.env.name, version, ())
    try:
        plan = runner.run()
    except DhashError as exc:
        message = f"deploy of {version} failed: {exc.message}"
        outcome = runner.outcome
        stopped_at = outcome.stopped_at if outcome else None
        ctx.finish(False, {"error": exc.message, "stopped_at": stopped_at})
        # Hosts that could not be put back: every channel, at the top severity.
        severity = "CRITICAL" if outcome and outcome.undo_failures else "ERROR"
        notify(ctx, "failure", message, severity=severity, version=version, phase="deploy")
        return _result(ctx, runner, plan, log_path, message)
    ctx.finish(True, {"version": version})
    text = f"Deployed {version} to every host of {ctx.env.name}"
    notify(ctx, "success", text, version=version, phase="complete")
    return _result(ctx, runner, plan, log_path, None)


def _result(
    ctx: RunContext, runner: FleetDeploy, plan: Plan, log_path: Path | None, error: str | None
) -> DeployResult:
    resumed = runner.resume.deploy_id if runner.resume else None
    return DeployResult(
        ctx.run_id, ctx.env.name, runner.version, error is None, plan, log_path, resumed, error,
        ctx.results,
    )  # fmt: skip
