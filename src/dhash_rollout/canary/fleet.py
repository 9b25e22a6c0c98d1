"""The canary on a fleet (``target = "fleet"``): the candidate on one canary host, its share of
the traffic an HAProxy weight, judged against the stable hosts by the same judge and loop as
the local canary (:class:`~dhash_rollout.canary.controller.JudgedCanary`).

``start``: the candidate installed on the controller (the migrations run from its copy) and on
the canary host only; the shared database backed up once and its *expand* migrations run (as
the fleet deploy does); the stable hosts' weights set where the share needs it
(:func:`~dhash_rollout.canary.fleet_plan.canary_weights`), then the canary host switched by the
fleet deploy's own :class:`~dhash_rollout.deploy.fleet.WaveExecutor` as a wave of one (drain,
switch, check, put back) and put back at the canary's weight. Each poll reads the canary host's
own ``/metrics`` and every stable host's, summed (as the fleet's gate counts them).

``promote``: every weight back to normal, then the remaining hosts in the environment's waves
with the monitor's gates between them (:class:`~dhash_rollout.deploy.fleet_run.MonitorGate`;
the canary host counts as done), then the contract migrations. ``abort`` (the judge's, or an
operator's): the touched hosts (the canary host) back on stable through the executor's undo,
weights restored; the other hosts were never switched.

Every host's state is journaled by the executor (``host:<name>`` records of the canary's run),
so a killed controller is resumed by ``dhash canary start`` (the judge at its weight; a
promotion's waves where they stopped) or undone by ``dhash canary abort``; a start killed
before its state was written is undone by the next start from the journal
(:func:`~dhash_rollout.deploy.fleet_run.undo_interrupted`).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx

from dhash_rollout.backup import create_backup
from dhash_rollout.canary.controller import (
    CANARY_PHASE,
    OPEN,
    CanaryState,
    JudgedCanary,
    Notice,
    ReadPoll,
    _no_notice,
    canary_dir,
    closed_state,
    config_of,
    config_to_json,
    ledger_path,
    mark_closed,
    read_state,
    release_increments,
    report_path,
    request_path,
    write_report,
    write_state,
)
from dhash_rollout.canary.fleet_plan import (
    canary_host,
    canary_weights,
    changed_weights,
    resume_problem,
    summed,
)
from dhash_rollout.canary.judge import JudgeConfig, ReleasePoll
from dhash_rollout.canary.metrics import Snapshot, parse
from dhash_rollout.deploy.fleet import WaveExecutor, host_states
from dhash_rollout.deploy.fleet_run import MonitorGate, run_migrations, undo_interrupted
from dhash_rollout.deploy.waves import (
    HostState,
    Migration,
    Wave,
    WavePlan,
    plan_waves,
    split_migrations,
)
from dhash_rollout.environments import Environment
from dhash_rollout.releases import Release, ReleaseSource, normalize_version
from dhash_rollout.runs.context import RunContext
from dhash_rollout.runs.journal import RunState
from dhash_rollout.runs.monitoring import DeployMonitor
from dhash_rollout.runs.plan import Phase
from dhash_rollout.runs.plan import Step as RunStep
from dhash_rollout.runs.schema import database_revision, pending_migration_steps
from dhash_rollout.targets.fleet.haproxy import ProxyError
from dhash_rollout.targets.fleet.hosts import ProxiedHosts
from dhash_rollout.targets.fleet.target import FleetTarget
from dhash_service.errors import CheckFailed, DhashError, NotFound

# A promotion's waves stopped midway resume too; so does an abort that did not put every
# touched host back (killed in its undo, or a host that could not be switched back).
FLEET_OPEN = (*OPEN, "promoting", "aborting")
NOT_PUT_BACK = "; NOT put back: "
CANARY_WAVE = 0  # the canary host's own wave, before the promotion's 1, 2, ...


def mark_undone(env: Environment, run: RunState) -> None:
    """A fleet ``dhash deploy`` undid the open canary ``run`` (as an interrupted run): its
    state says so at once, not only at the next ``canary start``."""
    mark_closed(env, run, FLEET_OPEN, "undone by a fleet deploy")


def read_host(client: httpx.Client, url: str) -> Snapshot | None:
    """One host's ``/health`` (its version) and ``/metrics`` (every worker's counters: the
    service runs prometheus_client's multiprocess mode); None if it did not answer. The host
    is the identity, not the answering worker, so its pid is left 0: a counter that went back
    is what marks a restart (:func:`~dhash_rollout.canary.metrics.increments`)."""
    try:
        health = client.get(f"{url}/health")
        metrics = client.get(f"{url}/metrics")
        if health.status_code != 200 or metrics.status_code != 200:
            return None
        version = health.json().get("version")
        return parse(metrics.text, 0, version if isinstance(version, str) else "?")
    except (httpx.HTTPError, ValueError):
        return None


class FleetCanaryRun(JudgedCanary):
    """One canary on a fleet, journaled under ``ctx`` (the command holds the lock)."""

    def __init__(
        self,
        ctx: RunContext,
        target: FleetTarget,
        config: JudgeConfig,
        *,
        interval_s: float = 30.0,
        notice: Notice = _no_notice,
        monitor: DeployMonitor | None = None,
        monitor_time_scale: float = 1.0,
        release_settings: dict[str, str] | None = None,
        host: str | None = None,
        guard_record: dict[str, Any] | None = None,
    ) -> None:
        self.ctx = ctx
        self.env = ctx.env
        self.target = target
        self.config = config
        self.interval_s = interval_s
        self.notice = notice
        self.say = ctx.say
        self.monitor = monitor  # the gates between the promotion's waves (None: none)
        self.monitor_time_scale = monitor_time_scale
        self.release_settings = release_settings
        self.host_choice = host
        self.guard_record = guard_record  # how the promotion is watched, for a later promote
        self.names = [h.name for h in target.host_list]
        self.normal = {h.name: h.weight for h in target.host_list}

    def for_state(self, state: CanaryState) -> FleetCanaryRun:
        if state.run_id:
            self.ctx.run_id = state.run_id
        return self

    def _run(self) -> RunState:
        run = self.ctx.journal.run(self.ctx.run_id)
        if run is None:
            raise CheckFailed(f"the canary's run {self.ctx.run_id} is not in the journal")
        return run

    # --- weights --------------------------------------------------------------------------
    def _set_weights(self, wanted: dict[str, int]) -> None:
        runtime, backend = self.target.hosts.runtime, self.target.proxy.backend
        try:
            now = {s.name: s.weight for s in runtime.servers(backend)}
            for host, weight in changed_weights(now, wanted).items():
                runtime.set_weight(backend, host, weight)
        except ProxyError as exc:
            raise CheckFailed(f"the canary's weights could not be set: {exc.message}") from exc

    def _restore_weights(self) -> str | None:
        """Every host at its configured weight again; why not, if the proxy refused."""
        try:
            self._set_weights(dict(self.normal))
        except CheckFailed as exc:
            return exc.message
        return None

    def _apply_weight(self, state: CanaryState) -> None:
        weights = canary_weights(state.weight, state.host, self.normal)
        self._set_weights(weights.weights)
        self.ctx.record(
            CANARY_PHASE, "started",
            {"weight": state.weight, "haproxy_weights": weights.weights,
             "share": round(weights.share_pct, 3)},
        )  # fmt: skip

    # --- start ----------------------------------------------------------------------------
    def start(self, source: ReleaseSource | None, version: str | None) -> CanaryState:
        """Start a canary on the canary host, or resume the interrupted one."""
        existing = read_state(self.env)
        run = self.ctx.journal.run(existing.run_id) if existing and existing.run_id else None
        closed = closed_state(existing, run, FLEET_OPEN, "found by the next canary start")
        if closed is not None:  # closed meanwhile (a state written before a deploy marked it)
            write_state(self.env, closed)
            existing = closed
        if self.to_resume(existing, version, open_states=FLEET_OPEN) and existing is not None:
            return self.resume(existing)
        self.close_stale_run(existing)
        served = self.target.served()
        releases = set(served.values())
        stable = releases.pop() if len(releases) == 1 else None
        if stable is None:
            raise NotFound(
                f"the hosts of {self.env.name} do not serve one release "
                f"({', '.join(f'{h}: {v}' for h, v in served.items())}): deploy one first"
            )
        host = canary_host(self.names, self.host_choice)
        self.ctx.start(
            {
                "env": self.env.name, "target": "fleet", "host": host, "version": version,
                "source": source.describe() if source else "the installed release",
                "from_version": stable, "from_versions": served,
                "from_revision": database_revision(self.env.database_url),
                "steps": [[s.weight, s.seconds] for s in self.config.steps],
                "release_settings": self.release_settings,
                "guard": self.guard_record,
            }
        )  # fmt: skip
        try:
            return self._start(stable, host, served, source, version)
        except DhashError as exc:
            self.ctx.finish(False, {"error": exc.message})
            raise

    def _undo_stale_start(self, last: RunState) -> None:
        """A start killed while its host switched (no state names the run): every host it
        touched back on what it served (from the journal), the weights restored, the run
        closed."""
        self.say(f"undoing the canary {last.deploy_id}, interrupted in its start")
        undo_interrupted(last, self.target.hosts, self.names, self.ctx.journal, self.say)
        self._restore_weights()

    def _install(self, host: str, source: ReleaseSource | None, version: str | None) -> Release:
        if source is None:  # an installed release: its kept wheel, to the canary host
            if version is None:
                raise CheckFailed("say which release: --source or --version")
            kept = self.target.release(normalize_version(version))
            if kept is None:
                raise NotFound(f"release {version} is not installed for {self.env.name}")
            source = ReleaseSource("wheel", str(kept.path / kept.wheel))
        step = RunStep(Phase.INSTALL, f"install the candidate on the controller and {host}")
        with self.ctx.phase(step) as detail:
            release = self.target.install(
                source, version=version, progress=self.say, settings=self.release_settings,
                only=[host],
            )  # fmt: skip
            detail.update(path=str(release.path), version=release.version, hosts=[host])
        return release

    def _expand(self, release: Release) -> tuple[str, ...]:
        """The backup, then the expand migrations (once: the database is shared); the
        contract ones are left for after the promotion's last wave (returned)."""
        revision = database_revision(self.env.database_url)
        pending = [Migration(r, c) for r, c in pending_migration_steps(release, revision)]
        expand, contract = split_migrations(pending)
        with self.ctx.phase(RunStep(Phase.BACKUP, "back up the shared database")) as detail:
            info = create_backup(self.env, self.ctx.backup_dir)
            detail.update(path=str(info.path), sha256=info.sha256, schema=info.schema_revision)
        if expand:
            self.say(f"running {len(expand)} expand migration(s) before the canary starts")
            step = RunStep(Phase.MIGRATE, f"migrate (expand) to {expand[-1]}")
            with self.ctx.phase(step) as detail:
                run_migrations(release, self.env, self.ctx.base, detail, expand[-1],
                               contract=bool(contract))  # fmt: skip
        return contract

    def _start(
        self, stable: str, host: str, served: dict[str, str | None],
        source: ReleaseSource | None, version: str | None,
    ) -> CanaryState:  # fmt: skip
        release = self._install(host, source, version)
        version = release.version
        self._expand(release)
        weight = self.config.steps[0].weight
        weights = canary_weights(weight, host, self.normal)
        self.ctx.record(CANARY_PHASE, "started", {"action": f"{version} on {host}",
                                                  "host": host})  # fmt: skip
        # The stable hosts' weights first (if the share needs them changed), then the canary
        # host switched as a wave of one and put back at its canary weight, never its full one.
        self._set_weights({h: w for h, w in weights.weights.items() if h != host})
        settings = self.target.hosts.hosts
        at_share = {
            **settings,
            host: settings[host].model_copy(update={"weight": weights.weights[host]}),
        }
        hosts: ProxiedHosts = replace(self.target.hosts, hosts=at_share)
        executor = WaveExecutor(hosts, self.ctx.record, version, served)
        # wave 0: the promotion's waves keep the fleet plan's numbers (1, 2, ...), so the
        # canary's own wave is not a second ``wave:1`` record of the run
        outcome = executor.run(WavePlan(False, (), (Wave(CANARY_WAVE, (host,), 0),), (), ()))
        if not outcome.ok:  # the executor put the host back on stable
            self._restore_weights()
            raise CheckFailed(f"the canary host could not take {version}: {outcome.summary()}")
        canary_dir(self.env).mkdir(parents=True, exist_ok=True)
        ledger_path(self.env).write_text("", encoding="utf-8")
        request_path(self.env).unlink(missing_ok=True)
        state = CanaryState(
            version=version, stable=stable, slot=host, slot_pid=0, stable_pid=0, members={},
            weight=weight, status="running", started_at=time.time(),
            config=config_to_json(self.config), run_id=self.ctx.run_id, host=host,
        )  # fmt: skip
        write_state(self.env, state)
        self.ctx.record(
            CANARY_PHASE, "started",
            {"host": host, "weight": weight, "haproxy_weights": weights.weights,
             "share": round(weights.share_pct, 3), "ledger": str(ledger_path(self.env))},
        )  # fmt: skip
        text = (
            f"canary {version} started on {host} beside {stable} at {weights.share_pct:.3g}% "
            f"of new requests (HAProxy weight {weights.weights[host]})"
        )
        self.say(text)
        self.notice("deploy", "INFO", version, text)
        return state

    def resume(self, state: CanaryState) -> CanaryState:
        """An interrupted canary: its host still on the candidate and the others on stable, it
        goes on at its weight over the same ledger; a promotion stopped midway goes on with its
        waves; anything else is aborted to stable."""
        self.for_state(state)
        if state.status == "aborting":
            self.say(f"resuming the abort of {state.version} [{state.run_id}]")
            self.abort(state, state.reason)
            return state
        if state.status == "promoting":
            self.say(f"resuming the promotion of {state.version} [{state.run_id}]")
            self._promote_waves(state, state.reason or "promoted")
            return state
        problem = resume_problem(self.target.served(), state.host, state.version, state.stable)
        if problem:
            self.say(f"resuming the interrupted canary of {state.version}: {problem}")
            self.abort(state, f"interrupted, and {problem}: aborted to stable")
            return state
        self.config = config_of(state)
        self._apply_weight(state)
        state.status = "running"
        write_state(self.env, state)
        self.ctx.record(CANARY_PHASE, "started", {"resumed": True, "weight": state.weight})
        self.say(f"resumed the canary of {state.version} on {state.host} at {state.weight:g}%")
        return state

    # --- the loop's reading ---------------------------------------------------------------
    def _reader(self, state: CanaryState) -> ReadPoll:
        """The canary host's own metrics, and the stable hosts' summed, per poll."""
        urls = {h.name: h.url for h in self.target.host_list}
        bounds = self.config.bounds
        client = httpx.Client(timeout=5.0)

        def read_all() -> dict[str, Snapshot | None]:
            with ThreadPoolExecutor(max_workers=len(urls)) as pool:
                found = pool.map(lambda u: read_host(client, u), urls.values())
                return dict(zip(urls, found, strict=True))

        before = {h: s for h, s in read_all().items() if s is not None}

        def read() -> tuple[ReleasePoll, ReleasePoll]:
            now = read_all()
            canary = release_increments(before.get(state.host), now[state.host], bounds,
                                        "canary")  # fmt: skip
            stable = [
                release_increments(before.get(h), s, bounds, f"stable host {h}")
                for h, s in now.items()
                if h != state.host
            ]
            before.update({h: s for h, s in now.items() if s is not None})
            return canary, summed(stable, bounds)

        return read

    # --- the ends -------------------------------------------------------------------------
    def abort(self, state: CanaryState, reason: str) -> None:
        """Every touched host (the canary host; a stopped promotion's hosts too) back on
        stable through the executor's undo, the weights restored; untouched hosts alone.

        The state says ``aborting`` before the undo begins, and keeps saying it while a host
        is not back (its run left open): a controller killed in the undo, or a host that could
        not be switched back (a switch back timed out under load), is finished by ``dhash
        canary abort`` or ``start`` again, never left looking aborted on the candidate. A host
        whose switch back failed is tried once more before that."""
        self.for_state(state)
        reason = reason.split(NOT_PUT_BACK, maxsplit=1)[0]
        state.status, state.reason = "aborting", reason
        write_state(self.env, state)
        run = self._run()
        previous = dict(run.params.get("from_versions") or {})
        executor = WaveExecutor(self.target.hosts, self.ctx.record, state.version, previous,
                                states=host_states(run, self.names))  # fmt: skip
        undone, problems = executor.undo(0)
        if problems:  # once more, those hosts only (the undone ones are rolled_back now)
            self.say(f"not put back: {problems}; trying once more")
            again, problems = executor.undo(0)
            undone += again
        weights = self._restore_weights()
        if weights:
            problems["weights"] = weights
        state.weight = 0.0
        if problems:
            self._not_put_back(state, reason, undone, problems)
            return
        state.status, state.reason = "aborted", reason
        write_state(self.env, state)
        request_path(self.env).unlink(missing_ok=True)
        report = write_report(self.env, state)
        self.ctx.record(
            CANARY_PHASE, "done",
            {"outcome": "aborted", "reason": reason, "report": str(report),
             "undone": list(undone), "not_undone": problems},
        )  # fmt: skip
        self.ctx.finish(False, {"error": f"canary aborted: {reason}", "outcome": "aborted"})
        self.say(f"canary {state.version} aborted: {state.reason}; report: {report}")
        self.notice("failure", "ERROR", state.version,
                    f"canary {state.version} on {state.host} aborted (the other hosts untouched"
                    f" on {state.stable}): {state.reason}. Report: {report}")  # fmt: skip

    def _not_put_back(
        self, state: CanaryState, reason: str, undone: tuple[str, ...], problems: dict[str, str]
    ) -> None:
        """An abort that left a touched host off stable: still ``aborting``, its run open."""
        named = "; ".join(f"{h}: {w}" for h, w in problems.items())
        state.reason = f"{reason}{NOT_PUT_BACK}{named}"
        write_state(self.env, state)
        request_path(self.env).unlink(missing_ok=True)
        report = write_report(self.env, state)
        self.ctx.record(
            CANARY_PHASE, "failed",
            {"outcome": "aborting", "reason": reason, "report": str(report),
             "undone": list(undone), "not_undone": problems},
        )  # fmt: skip
        again = f"`dhash canary abort --env {self.env.name}` tries again"
        self.say(f"canary {state.version} NOT aborted on every host: {named}; {again}")
        self.notice("failure", "CRITICAL", state.version,
                    f"canary {state.version} on {state.host}: the abort did not put every "
                    f"touched host back ({named}); {again}. Report: {report}")  # fmt: skip

    def promote(self, state: CanaryState, reason: str) -> None:
        """Every weight back to normal, the remaining hosts in the environment's waves with
        the monitor's gates between them, then the contract migrations."""
        self.for_state(state)
        self.ctx.record(CANARY_PHASE, "done", {"outcome": "promoted", "reason": reason,
                                                "report": str(report_path(self.env))})  # fmt: skip
        state.status, state.reason = "promoting", reason
        write_state(self.env, state)
        request_path(self.env).unlink(missing_ok=True)
        self._promote_waves(state, reason)

    def _promote_waves(self, state: CanaryState, reason: str) -> None:
        run = self._run()
        previous = dict(run.params.get("from_versions") or {})
        release = self.target.release(state.version)
        if release is None:
            raise NotFound(f"release {state.version} is not installed for {self.env.name}")
        why = self._restore_weights()
        if why:
            raise CheckFailed(why)
        states = host_states(run, self.names)
        done = [h for h, s in states.items() if s == HostState.READY]
        rest = [h for h in self.names if h not in done]
        if rest:
            step = RunStep(Phase.INSTALL, f"install {state.version} on {', '.join(rest)}")
            with self.ctx.phase(step) as detail:
                source = ReleaseSource("wheel", str(release.path / release.wheel))
                settings = run.params.get("release_settings")
                self.target.install(source, version=state.version, progress=self.say,
                                    settings=settings, only=rest)  # fmt: skip
                detail.update(version=state.version, hosts=rest)
        revision = database_revision(self.env.database_url)
        pending = [Migration(r, c) for r, c in pending_migration_steps(release, revision)]
        waves = self.target.waves
        plan = plan_waves(self.names, waves.sizes, waves.max_fail_percentage, pending=pending,
                          done=done, first=state.host, backup=False)  # fmt: skip
        for line in plan.lines()[1:]:
            self.say(f"    {line}")
        gate = None
        if self.monitor is not None:
            gate = MonitorGate(self.monitor, self.ctx, self.target, state.version, state.stable,
                               self.monitor_time_scale)  # fmt: skip
        executor = WaveExecutor(self.target.hosts, self.ctx.record, state.version, previous,
                                gate=gate, states=states)  # fmt: skip
        switch = RunStep(Phase.ACTIVATE, f"the remaining hosts to {state.version} in waves")
        try:
            with self.ctx.phase(switch) as detail:
                outcome = executor.run(plan)
                detail.update(
                    previous=state.stable, instance=",".join(self.names),
                    states={h: str(s) for h, s in outcome.states.items()},
                    undone=list(outcome.undone), not_undone=outcome.undo_failures,
                )  # fmt: skip
                if not outcome.ok:
                    raise CheckFailed(outcome.summary())
            if plan.contract:
                step = RunStep(Phase.CONTRACT, f"migrate (contract) to {plan.contract[-1]}")
                with self.ctx.phase(step) as detail:
                    run_migrations(release, self.env, self.ctx.base, detail, None,
                                   contract=False)  # fmt: skip
        except DhashError as exc:
            self._rolled_back(state, exc.message, executor.states)
            return
        state.status, state.weight, state.reason = "promoted", 100.0, reason
        write_state(self.env, state)
        report = write_report(self.env, state)
        self.ctx.finish(True, {"version": state.version, "outcome": "promoted"})
        text = f"canary {state.version} promoted to every host of {self.env.name}: {reason}"
        self.say(f"{text}; report: {report}")
        self.notice("success", "INFO", state.version, text)

    def _rolled_back(self, state: CanaryState, why: str, states: dict[str, HostState]) -> None:
        """A promotion's wave failed its budget or its gate: the executor put every host it
        touched (the canary host too) back on stable."""
        state.status, state.reason = "rolled_back", f"the promotion stopped: {why}"
        write_state(self.env, state)
        write_report(self.env, state)
        self.ctx.finish(False, {"error": state.reason, "outcome": "rolled_back"})
        self.say(f"canary {state.version} promoted, then {state.reason}")
        left = [h for h, s in states.items() if s in (HostState.FAILED, HostState.READY)]
        self.notice("failure", "CRITICAL" if left else "ERROR", state.version,
                    f"canary {state.version}: {state.reason}")  # fmt: skip
