"""The canary run on the local target: the candidate beside stable, stepped, judged, ended.

``start`` installs the candidate, starts it in the idle slot (``current`` does not move) while
a weighted program gives it a small probing share, maps the port group's members, and sets the
first step's weight. ``run`` then polls both releases' own metrics, appends every poll to the
ledger (``<root>/canary/ledger.jsonl``: what ``status`` replays through the same judge), and
acts on the judgement: the next weight, an automatic abort, or the promotion (the target's
normal switch: steer everything to the candidate, ``current`` moves, stable drains). An
inconclusive canary holds its weight for an operator. The caller holds the environment's lock
for all of it; ``dhash canary abort`` / ``promote`` from another terminal leave a request file
that the running controller acts on at its next poll.

The run is journaled in the environment's journal like a deploy (kind ``canary``, under the
run context the command opens): the backup taken before the expand-only migrations, the
migrations, the canary phase (its slot and every weight), and at the end the switch and the
post-deploy monitor's window (the deploy's own monitor phase) or the abort. The run stays open
while the candidate serves beside stable, so an interrupted or held canary is visible, a deploy
or rollback is refused meanwhile, and ``start`` again resumes it (or, if its candidate is gone,
aborts to stable).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from dhash_rollout.backup import create_backup
from dhash_rollout.canary.judge import (
    Action,
    JudgeConfig,
    Judgement,
    Poll,
    ReleasePoll,
    Step,
    observe,
    replay,
    start,
)
from dhash_rollout.canary.metrics import Snapshot, increments, read_releases
from dhash_rollout.canary.quantiles import Histogram
from dhash_rollout.canary.report import Header, render
from dhash_rollout.canary.schema_rule import contract_steps
from dhash_rollout.canary.traffic import Members, clear, map_members, set_weight
from dhash_rollout.deploy.run import GatesFailed, watch_phase
from dhash_rollout.environments import Environment, api_token
from dhash_rollout.releases import ReleaseSource, normalize_version, write_release_settings
from dhash_rollout.runs.context import RunContext
from dhash_rollout.runs.journal import RUN_PHASE, Journal, RunState
from dhash_rollout.runs.monitoring import DeployMonitor, MonitorRequest, Verdict
from dhash_rollout.runs.plan import Phase
from dhash_rollout.runs.plan import Step as RunStep
from dhash_rollout.runs.recovery import RunsRollback
from dhash_rollout.runs.schema import (
    database_revision,
    migrate_with,
    pending_migrations,
    release_head,
    release_revisions,
)
from dhash_rollout.runs.verification import lock_held
from dhash_rollout.targets.local import LocalTarget
from dhash_rollout.targets.local.readiness import descends_from
from dhash_rollout.targets.local.supervisor import ACTIVE_STATES
from dhash_service.errors import CheckFailed, DhashError, NotFound

PROBE_WEIGHT = 5.0  # % of new connections, at least, while the candidate starts
CANARY_PHASE = "canary"  # the journal's phase of the candidate beside stable
OPEN = ("running", "interrupted")  # a state whose controller is gone once we hold the lock
Say = Callable[[str], None]
Notice = Callable[[str, str, str, str], None]  # kind, severity, version, message; never raises


def _no_notice(_kind: str, _severity: str, _version: str, _message: str) -> None:
    return None


def canary_dir(env: Environment) -> Path:
    return env.root / "canary"


@dataclass
class CanaryState:
    version: str
    stable: str
    slot: str
    slot_pid: int
    stable_pid: int
    members: dict[str, list[int]]
    weight: float
    status: str  # running, aborted, promoted, rolled_back, inconclusive, interrupted
    # (a fleet's also: promoting, aborting)
    started_at: float
    reason: str = ""
    config: dict[str, Any] | None = None  # the judge's settings, so status replays the same
    run_id: str = ""  # the canary's run in the environment's journal
    host: str = ""  # on a fleet: the canary host (slot, pids and members unused there)


def config_to_json(config: JudgeConfig) -> dict[str, Any]:
    return {
        "steps": [[s.weight, s.seconds] for s in config.steps],
        "alpha": config.alpha,
        "min_samples": config.min_samples,
        "max_wait_seconds": config.max_wait_seconds,
        "failure_rate_threshold_pct": config.failure_rate_threshold_pct,
        "p95_threshold_ms": config.p95_threshold_ms,
        "health_threshold": config.health_threshold,
    }


def config_of(state: CanaryState) -> JudgeConfig:
    """The judge settings a canary ran with (the defaults for a state written without them)."""
    if not state.config:
        return JudgeConfig()
    c = state.config
    defaults = JudgeConfig()
    return JudgeConfig(
        steps=tuple(Step(float(w), float(t)) for w, t in c["steps"]),
        alpha=float(c["alpha"]),
        min_samples=int(c["min_samples"]),
        max_wait_seconds=float(c["max_wait_seconds"]),
        failure_rate_threshold_pct=c.get(
            "failure_rate_threshold_pct", defaults.failure_rate_threshold_pct
        ),
        p95_threshold_ms=c.get("p95_threshold_ms", defaults.p95_threshold_ms),
        health_threshold=int(c.get("health_threshold", defaults.health_threshold)),
    )


def _state_path(env: Environment) -> Path:
    return canary_dir(env) / "state.json"


def ledger_path(env: Environment) -> Path:
    return canary_dir(env) / "ledger.jsonl"


def request_path(env: Environment) -> Path:
    return canary_dir(env) / "request"


def read_state(env: Environment) -> CanaryState | None:
    try:
        return CanaryState(**json.loads(_state_path(env).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise CheckFailed(f"{_state_path(env)} is not a canary state file: {exc}") from exc


def write_state(env: Environment, state: CanaryState) -> None:
    path = _state_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".state.json.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
    os.replace(tmp, path)


def closed_state(
    state: CanaryState | None, run: RunState | None, open_states: tuple[str, ...], by: str
) -> CanaryState | None:
    """What an open canary's state becomes once its journal run was closed by another command
    (a fleet ``dhash deploy`` undoes an open canary run first): aborted, naming why. None: no
    change (no open state, or its run still open)."""
    if state is None or state.status not in open_states or run is None or not run.finished:
        return None
    if run.deploy_id != state.run_id:
        return None
    return replace(
        state, status="aborted", weight=0.0,
        reason=f"its run was closed meanwhile ({run.outcome}, {by})",
    )  # fmt: skip


def mark_closed(env: Environment, run: RunState, open_states: tuple[str, ...], by: str) -> None:
    """The canary state of ``run``, closed by another command, marked aborted at once."""
    closed = closed_state(read_state(env), run, open_states, by)
    if closed is not None:
        write_state(env, closed)


def poll_to_json(p: Poll) -> dict[str, Any]:
    def rel(r: ReleasePoll) -> dict[str, Any]:
        return {
            "extractions": r.extractions,
            "failures": r.failures,
            "bounds": list(r.hash_times.bounds),
            "counts": list(r.hash_times.counts),
            "healthy": r.healthy,
        }

    return {"at": p.at, "canary": rel(p.canary), "stable": rel(p.stable)}


def poll_from_json(d: dict[str, Any]) -> Poll:
    def rel(r: dict[str, Any]) -> ReleasePoll:
        hist = Histogram(tuple(r["bounds"]), tuple(r["counts"]))
        return ReleasePoll(int(r["extractions"]), int(r["failures"]), hist, r["healthy"])

    return Poll(float(d["at"]), rel(d["canary"]), rel(d["stable"]))


def read_ledger(env: Environment) -> list[Poll]:
    try:
        lines = ledger_path(env).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    polls = []
    for number, line in enumerate(lines, 1):
        try:
            polls.append(poll_from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines):
                break  # a last line cut short by a crash: the polls before it stand
            raise CheckFailed(f"{ledger_path(env)} line {number}: {exc}") from exc
    return polls


def report_path(env: Environment) -> Path:
    return canary_dir(env) / "report.html"


def write_report(env: Environment, state: CanaryState, path: Path | None = None) -> Path:
    """The HTML report (canary and stable side by side) from the ledger, written whole
    (a temporary name, then renamed: never a half-written page that looks valid)."""
    config = config_of(state)
    polls = read_ledger(env)
    header = Header(state.version, state.stable, env.name, state.status, state.reason,
                    state.run_id)  # fmt: skip
    text = render(header, polls, replay(polls, config), config)
    path = path or report_path(env)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def judgements(env: Environment, config: JudgeConfig) -> list[Judgement]:
    """The judgement of every recorded poll, replayed through the same judge."""
    return replay(read_ledger(env), config)


def status_line(env: Environment) -> str | None:
    """One line for ``dhash release status``: the last canary and whether it is still open
    (its controller alive, or gone: ``dhash canary start`` resumes it); None: no canary yet."""
    state = read_state(env)
    if state is None:
        return None
    run = Journal.for_root(env.root).run(state.run_id) if state.run_id else None
    where = f" [{state.run_id}]" if state.run_id else ""
    head = f"canary: {state.version} beside {state.stable}"
    if state.host:
        head = f"canary: {state.version} on {state.host} beside {state.stable}"
    if state.status in ("running", "interrupted", "promoting"):
        alive = lock_held(env)
        if state.status == "promoting":  # a fleet's promotion: the waves after the canary
            if alive:
                return f"{head}: promoting to every host in waves{where}"
            return (
                f"{head}: its promotion was interrupted (dhash canary start --env {env.name} "
                f"resumes the waves, dhash canary abort undoes every touched host){where}"
            )
        if alive:
            return f"{head}: running at {state.weight:g}%{where}"
        return (
            f"{head}: interrupted at {state.weight:g}%, the candidate still serving "
            f"(dhash canary start --env {env.name} --version {state.version} resumes it){where}"
        )
    if state.status == "aborting":  # a fleet's abort that left a host off stable
        how = "its abort goes on" if lock_held(env) else "its abort did not finish"
        return (
            f"{head}: {how} ({state.reason}; dhash canary abort --env {env.name} tries "
            f"again){where}"
        )
    if state.status == "inconclusive":
        return f"{head}: held inconclusive at {state.weight:g}% ({state.reason}){where}"
    verdict = run.detail_of("monitor").get("verdict") if run else None
    watched = f", monitor {verdict}" if verdict else ""
    return f"{head}: {state.status}{watched} ({state.reason}){where}"


ReadPoll = Callable[[], tuple[ReleasePoll, ReleasePoll]]  # (canary, stable) since the last


def release_increments(
    before: Snapshot | None, now: Snapshot | None, bounds: tuple[float, ...], name: str
) -> ReleasePoll:
    """What one release did between two readings; not read at all (no answer): unhealthy."""
    if now is None:  # did not answer /health 200 on any connection: not healthy
        return ReleasePoll(0, 0, Histogram.empty(bounds), healthy=False)
    poll = increments(before, now, healthy=True)
    if poll.hash_times.bounds != bounds:
        raise CheckFailed(
            f"the {name} release's hash-time buckets differ from this toolkit's: "
            "its histogram cannot be compared"
        )
    return poll


class JudgedCanary:
    """The poll-judge-act loop every canary shares (the local target's, a fleet's): what a
    poll reads, how a weight is set and what an abort or a promotion does are the target's."""

    ctx: RunContext
    env: Environment
    config: JudgeConfig
    interval_s: float
    say: Say
    notice: Notice

    def start(self, source: ReleaseSource | None, version: str | None) -> CanaryState:
        raise NotImplementedError

    def _reader(self, state: CanaryState) -> ReadPoll:
        raise NotImplementedError

    def _apply_weight(self, state: CanaryState) -> None:
        raise NotImplementedError

    def abort(self, state: CanaryState, reason: str) -> None:
        raise NotImplementedError

    def promote(self, state: CanaryState, reason: str) -> None:
        raise NotImplementedError

    # what else an operator may do with another open run than finish it (the local target:
    # roll back)
    other_run_hint = ""

    def _undo_stale_start(self, last: RunState) -> None:
        """The target's side of :meth:`close_stale_run`: what a start killed before its state
        was written left behind, put back; the run closed."""
        raise NotImplementedError

    def close_stale_run(self, existing: CanaryState | None) -> bool:
        """The journal's last run left open: a canary run whose state has ended (killed after
        its end, before the run was closed) is closed; one that no state names (a start killed
        before its candidate served) is undone by the target; another run (a deploy, a
        rollback) is refused. Whether there was a run to close."""
        last = self.ctx.journal.last_run()
        if last is None or last.finished:
            return False
        if last.kind != "canary":
            raise CheckFailed(
                f"the {last.kind} {last.deploy_id} is unfinished in {self.env.name}: "
                f"finish it (run it again){self.other_run_hint} before a canary"
            )
        if existing is not None and existing.run_id == last.deploy_id:
            # its state has ended (aborted, promoted) but the process died before the run was
            # closed (e.g. killed in the monitor's window after the switch): close it now
            self.ctx.journal.append(
                last.deploy_id, RUN_PHASE, "done" if existing.status == "promoted" else "failed",
                {"outcome": existing.status, "closed": "by the next canary start"},
            )  # fmt: skip
            return True
        self._undo_stale_start(last)
        return True

    def to_resume(self, existing: CanaryState | None, version: str | None, *,
                  open_states: tuple[str, ...] = OPEN) -> bool:  # fmt: skip
        """Whether ``start`` resumes the canary ``existing`` describes (interrupted: we hold
        the lock now); a held or another version's canary is refused."""
        if existing is not None and existing.status == "inconclusive":
            raise CheckFailed(
                f"a canary of {existing.version} is held inconclusive in {self.env.name}: "
                "promote or abort it first"
            )
        if existing is None or existing.status not in open_states:
            return False
        if version is not None and normalize_version(version) != existing.version:
            raise CheckFailed(
                f"a canary of {existing.version} was interrupted in {self.env.name}: "
                f"`dhash canary start --version {existing.version}` resumes it, "
                "`dhash canary abort` ends it"
            )
        return True

    def run(self, state: CanaryState, stop: Callable[[], bool]) -> Judgement | None:
        """Poll and judge until the canary ends, is held (inconclusive) or ``stop()``."""
        judge = start(self.config, 0.0)
        for p in read_ledger(self.env):  # a resumed run continues the same evidence
            judge, _ = observe(judge, p, self.config)
        read = self._reader(state)
        last: Judgement | None = judge.last
        t0 = state.started_at
        while not stop():
            deadline = time.monotonic() + self.interval_s
            while time.monotonic() < deadline and not stop() and not self._requested():
                time.sleep(min(0.2, self.interval_s))
            wanted = self._requested()
            if stop() and not wanted:
                break
            canary, stable = read()
            poll = Poll(time.time() - t0, canary, stable)
            with ledger_path(self.env).open("a", encoding="utf-8") as ledger:
                ledger.write(json.dumps(poll_to_json(poll)) + "\n")
            step = judge.step
            judge, last = observe(judge, poll, self.config)
            self.say(f"[{last.action.value}] {last.reason}")
            if wanted == "abort":
                self.abort(state, "aborted by an operator")
                return last
            if wanted == "promote" or last.action is Action.PROMOTE:
                self.promote(state, "promoted by an operator" if wanted else last.reason)
                return last
            if last.action is Action.ABORT:
                self.abort(state, last.reason)
                return last
            if last.action is Action.INCONCLUSIVE:
                state.status, state.reason = "inconclusive", last.reason
                write_state(self.env, state)
                self.ctx.record(CANARY_PHASE, "started", {"inconclusive": last.reason})
                write_report(self.env, state)
                held = f"canary {state.version} inconclusive, holding at {state.weight:g}%"
                self.notice("info", "WARN", state.version, f"{held}: {last.reason}")
                self.say(
                    f"{held} beside {state.stable} for an operator: `dhash canary promote "
                    f"--env {self.env.name}` or `dhash canary abort --env {self.env.name}`"
                )
                return last
            if judge.step != step:
                state.weight = self.config.steps[judge.step].weight
                self._apply_weight(state)
                write_state(self.env, state)
                self.ctx.record(CANARY_PHASE, "started", {"weight": state.weight})
                self.say(f"{state.version} now takes {state.weight:g}% of new connections")
        state.status = "interrupted"
        write_state(self.env, state)
        self.ctx.record(CANARY_PHASE, "started", {"interrupted": f"at {state.weight:g}%"})
        write_report(self.env, state)
        return last

    def _requested(self) -> str | None:
        try:
            return request_path(self.env).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None


class CanaryRun(JudgedCanary):
    """One canary, journaled under ``ctx`` (the command opens it with the lock it holds)."""

    def __init__(
        self,
        ctx: RunContext,
        target: LocalTarget,
        config: JudgeConfig,
        *,
        interval_s: float = 30.0,
        notice: Notice = _no_notice,
        monitor: DeployMonitor | None = None,
        rollback: RunsRollback | None = None,
        monitor_time_scale: float = 1.0,
        release_settings: dict[str, str] | None = None,
        guard_record: dict[str, Any] | None = None,
    ) -> None:
        self.ctx = ctx
        self.env = ctx.env
        self.notice = notice
        self.base = ctx.base  # where the environments file is (release commands)
        self.target = target
        self.config = config
        self.interval_s = interval_s
        self.say: Say = ctx.say
        self.port = ctx.env.port
        self.monitor = monitor  # the post-deploy window after a promotion (None: none)
        self.rollback = rollback  # what runs, under this lock, when that window fails
        self.monitor_time_scale = monitor_time_scale
        self.release_settings = release_settings  # the candidate's own settings (None: keep)
        self.guard_record = guard_record  # how the promotion is watched, for a later promote

    def for_state(self, state: CanaryState) -> CanaryRun:
        """This run acting on the canary ``state`` describes (its journal run)."""
        if state.run_id:
            self.ctx.run_id = state.run_id
        return self

    # --- start ---------------------------------------------------------------------------
    def start(self, source: ReleaseSource | None, version: str | None) -> CanaryState:
        """Start a canary, or resume the interrupted one (its controller died or was stopped:
        we hold the lock now)."""
        existing = read_state(self.env)
        if self.to_resume(existing, version) and existing is not None:
            return self.resume(existing)
        self.close_stale_run(existing)
        stable = self.target.current()
        if stable is None:
            raise NotFound(f"no stable release in {self.env.name}: deploy one first")
        self.ctx.start(
            {
                "env": self.env.name,
                "version": version,
                "source": source.describe() if source else "the installed release",
                "from_version": stable.version,
                "from_revision": database_revision(self.env.database_url),
                "steps": [[s.weight, s.seconds] for s in self.config.steps],
                "release_settings": self.release_settings,
                "guard": self.guard_record,
            }
        )
        try:
            return self._start(stable.version, source, version)
        except DhashError as exc:
            self.ctx.finish(False, {"error": exc.message})
            raise

    other_run_hint = " or `dhash rollback`"

    def _undo_stale_start(self, last: RunState) -> None:
        """A start killed before its candidate served: its half-started candidate stopped."""
        stable = self.target.current()
        for slot in self.target.supervisor.slots():
            beside = stable is not None and slot.release != stable.version
            if beside and slot.state in ACTIVE_STATES:  # (still booting, too)
                self.say(f"stopping {slot.release} in {slot.name}, left by an interrupted start")
                self.target.retire_slot(slot.name, progress=self.say)
        clear(self.port)
        self.ctx.journal.append(
            last.deploy_id, RUN_PHASE, "failed", {"error": "interrupted in its start; cleaned up"}
        )

    def _start(self, stable: str, source: ReleaseSource | None, version: str | None) -> CanaryState:
        if source is not None:
            with self.ctx.phase(RunStep(Phase.INSTALL, "install the candidate")) as detail:
                release = self.target.install(source, version=version, progress=self.say)
                detail.update(path=str(release.path), version=release.version)
            version = release.version
        if version is None:
            raise CheckFailed("say which release: --source or --version")
        version = normalize_version(version)
        self._schema_for(version)
        found = self.target.release(version)
        if self.release_settings is not None and found is not None:
            write_release_settings(found, self.release_settings)  # before it starts
        serving = [
            s for s in self.target.supervisor.slots()
            if s.release == stable and s.state == "RUNNING"
        ]  # fmt: skip
        if not serving or serving[0].pid is None:
            raise CheckFailed(f"the stable release {stable} is not running")
        stable_pid = serving[0].pid
        workers = self.target.workers
        stable_idx = tuple(range(workers))
        self.ctx.record(CANARY_PHASE, "started", {"action": f"{version} beside {stable}"})
        # Before the candidate listens: the first step's share (at least 5 %) for the indices
        # it will take, so its readiness probes reach it (the kernel gives a connection meant
        # for an index nobody holds yet to stable; a bound candidate's backlog waits for it).
        set_weight(
            self.port,
            Members(canary=tuple(range(workers, 2 * workers)), stable=stable_idx),
            max(PROBE_WEIGHT, self.config.steps[0].weight),
        )
        try:
            slot, slot_pid = self.target.start_beside(version, progress=self.say)
        except Exception:
            clear(self.port)
            raise

        def classify(pid: int) -> str | None:
            if descends_from(pid, slot_pid):
                return "canary"
            if descends_from(pid, stable_pid):
                return "stable"
            return None

        try:
            members = map_members(self.port, classify, 2 * workers)
        except Exception:
            self.target.retire_slot(slot, progress=self.say)
            clear(self.port)
            raise
        weight = self.config.steps[0].weight
        set_weight(self.port, members, weight)
        canary_dir(self.env).mkdir(parents=True, exist_ok=True)
        ledger_path(self.env).write_text("", encoding="utf-8")
        request_path(self.env).unlink(missing_ok=True)
        state = CanaryState(
            version=version,
            stable=stable,
            slot=slot,
            slot_pid=slot_pid,
            stable_pid=stable_pid,
            members={"canary": list(members.canary), "stable": list(members.stable)},
            weight=weight,
            status="running",
            started_at=time.time(),
            config=config_to_json(self.config),
            run_id=self.ctx.run_id,
        )
        write_state(self.env, state)
        ledger = str(ledger_path(self.env))
        self.ctx.record(CANARY_PHASE, "started", {"slot": slot, "weight": weight, "ledger": ledger})
        self.say(f"{version} takes {weight:g}% of new connections beside {stable}")
        self.notice(
            "deploy", "INFO", version,
            f"canary {version} started beside {stable} at {weight:g}% of new connections",
        )  # fmt: skip
        return state

    def resume(self, state: CanaryState) -> CanaryState:
        """Take over an interrupted canary: both releases still serving, it continues at its
        weight with the same ledger (the same evidence); its candidate gone, it is aborted."""
        self.for_state(state)
        slots = {s.name: s for s in self.target.supervisor.slots()}
        mine = slots.get(state.slot)
        alive = mine is not None and mine.state == "RUNNING" and mine.pid == state.slot_pid
        stable_up = any(s.state == "RUNNING" and s.pid == state.stable_pid for s in slots.values())
        if not (alive and stable_up):
            gone = "the candidate" if not alive else "the stable release"
            self.say(f"resuming the interrupted canary of {state.version}: {gone} is not running")
            self.abort(state, f"interrupted, and {gone} was no longer running: aborted to stable")
            return state
        self.config = config_of(state)  # the judge it ran with, over the same ledger
        set_weight(self.port, self._members(state), state.weight)  # the program it had
        state.status = "running"
        write_state(self.env, state)
        self.ctx.record(CANARY_PHASE, "started", {"resumed": True, "weight": state.weight})
        self.say(f"resumed the canary of {state.version} at {state.weight:g}% [{state.run_id}]")
        return state

    def _schema_for(self, version: str) -> None:
        """Refuse a candidate whose pending migrations contract the schema stable runs on; back
        up, then run the expand-only ones, before it starts (docs/canary.md, docs/migrations.md)."""
        release = self.target.release(version)
        if release is None:
            raise NotFound(f"release {version} is not installed in {self.env.root}")
        current = database_revision(self.env.database_url)
        if release_head(release) == current:
            return
        if current is not None and current not in release_revisions(release):
            raise CheckFailed(
                f"the database is at revision {current}, which {version} does not know: "
                "a canary runs a release at or ahead of stable's schema"
            )
        pending = pending_migrations(release, current)
        steps = [step for rev, source in pending for step in contract_steps(rev, source)]
        if steps:
            raise CheckFailed(
                f"a canary of {version} is refused: its migrations change the schema the stable "
                f"release runs on ({'; '.join(str(s) for s in steps)}); deploy it with "
                "dhash deploy instead"
            )
        backup = RunStep(Phase.BACKUP, "back up before the expand-only migrations")
        with self.ctx.phase(backup) as detail:
            info = create_backup(self.env, self.ctx.backup_dir)  # verified before it returns
            detail.update(path=str(info.path), sha256=info.sha256, schema=info.schema_revision)
        self.say(f"running {len(pending)} expand-only migration(s) before the canary starts")
        with self.ctx.phase(RunStep(Phase.MIGRATE, "expand-only migrations")) as detail:
            detail["from_revision"] = current
            migrate_with(release, self.env, self.base, None)
            detail["to_revision"] = database_revision(self.env.database_url)

    # --- the loop ------------------------------------------------------------------------
    def _members(self, state: CanaryState) -> Members:
        return Members(tuple(state.members["canary"]), tuple(state.members["stable"]))

    def _classify(self, state: CanaryState) -> Callable[[int], str | None]:
        def classify(pid: int) -> str | None:
            if descends_from(pid, state.slot_pid):
                return "canary"
            if descends_from(pid, state.stable_pid):
                return "stable"
            return None

        return classify

    def _reader(self, state: CanaryState) -> ReadPoll:
        """Each release's own metrics on the shared port (:func:`read_releases`)."""
        classify = self._classify(state)
        before: dict[str, Snapshot] = read_releases(self.port, classify)
        bounds = self.config.bounds

        def read() -> tuple[ReleasePoll, ReleasePoll]:
            nonlocal before
            now = read_releases(self.port, classify)
            polls = tuple(
                release_increments(before.get(n), now.get(n), bounds, n)
                for n in ("canary", "stable")
            )
            before = {**before, **now}
            return polls[0], polls[1]

        return read

    def _apply_weight(self, state: CanaryState) -> None:
        set_weight(self.port, self._members(state), state.weight)

    # --- the ends ------------------------------------------------------------------------
    def abort(self, state: CanaryState, reason: str) -> None:
        """The candidate out of rotation, then stopped (it drains); stable untouched."""
        self.for_state(state)
        members = self._members(state)
        set_weight(self.port, Members(members.stable, members.stable), 0)
        self.target.retire_slot(state.slot, progress=self.say)
        clear(self.port)  # stable alone: the kernel's own spreading, as before the canary
        state.status, state.weight, state.reason = "aborted", 0.0, reason
        write_state(self.env, state)
        request_path(self.env).unlink(missing_ok=True)
        report = write_report(self.env, state)
        self.ctx.record(
            CANARY_PHASE, "done", {"outcome": "aborted", "reason": reason, "report": str(report)}
        )
        self.ctx.finish(False, {"error": f"canary aborted: {reason}", "outcome": "aborted"})
        self.say(f"canary {state.version} aborted: {reason}; report: {report}")
        self.notice("failure", "ERROR", state.version, f"canary {state.version} aborted "
                    f"(stable {state.stable} untouched): {reason}. Report: {report}")  # fmt: skip

    def promote(self, state: CanaryState, reason: str) -> None:
        """The target's normal switch (everything to the candidate, ``current`` moves, stable
        drains and stops), then the post-deploy monitor's window over the new stable, as after
        a deploy; a failed window rolls back to the old stable under this lock."""
        self.for_state(state)
        self.ctx.record(CANARY_PHASE, "done", {"outcome": "promoted", "reason": reason,
                                                "report": str(report_path(self.env))})  # fmt: skip
        switch = RunStep(Phase.ACTIVATE, f"switch every new connection to {state.version}")
        with self.ctx.phase(switch) as detail:
            result = self.target.activate(state.version, progress=self.say)
            detail.update(previous=result.previous, instance=result.instance)
            detail["switched_at"] = switched_at = time.time()
        state.status, state.weight, state.reason = "promoted", 100.0, reason
        write_state(self.env, state)
        request_path(self.env).unlink(missing_ok=True)
        report = write_report(self.env, state)
        self.say(f"canary {state.version} promoted: {reason}; report: {report}")
        if self.monitor is None:
            self.ctx.skip(RunStep(Phase.MONITOR, "the monitor", run=False, reason="no monitor"))
            self.ctx.finish(True, {"version": state.version, "outcome": "promoted"})
            self.notice("success", "INFO", state.version,
                        f"canary {state.version} promoted, now stable: {reason}")  # fmt: skip
            return
        self._watch(state, reason, switched_at)

    def _watch(self, state: CanaryState, reason: str, switched_at: float) -> None:
        assert self.monitor is not None
        request = MonitorRequest(
            environment=self.env.name,
            version=state.version,
            previous_version=state.stable,
            base_url=self.env.url,
            window_start=switched_at,
            run_id=self.ctx.run_id,
            log_dir=self.ctx.log_dir,
            time_scale=self.monitor_time_scale,
            api_token=api_token(self.env),
        )
        step = RunStep(Phase.MONITOR, "watch the quality gates over the new stable")
        try:
            with self.ctx.phase(step) as detail:
                watched = watch_phase(self.ctx, self.monitor, request, detail)
        except GatesFailed as failed:
            self._roll_back(state, failed.result.reason or failed.message)
            return
        if watched.verdict is Verdict.INTERRUPTED:
            # The candidate is stable now: nothing of the canary is left to resume, so the run
            # closes (a deploy or another canary may follow); `dhash monitor` watches the rest.
            text = (
                f"the monitor's window was cut short ({watched.reason}): `dhash monitor "
                f"--env {self.env.name}` watches {state.version}"
            )
            self.ctx.finish(True, {"version": state.version, "outcome": "promoted",
                                   "monitor": text})  # fmt: skip
            self.say(text)
            self.notice(
                "success", "WARN", state.version, f"canary {state.version} promoted; {text}"
            )
            return
        summary = watched.extra.get("summary")
        self.ctx.finish(True, {"version": state.version, "outcome": "promoted"})
        severity = "INFO" if watched.verdict is Verdict.PASSED else "WARN"
        text = f"canary {state.version} promoted, now stable: {reason}; "
        text += f"monitor {watched.verdict}" + (f" ({summary})" if summary else "")
        self.notice("success", severity, state.version, text)

    def _roll_back(self, state: CanaryState, why: str) -> None:
        """The monitor failed the promoted release: the injected rollback (the same one a
        deploy runs) puts the old stable back, journaled inside this run."""
        why = (why.strip().splitlines() or ["the quality gates failed"])[0][:300]
        state.status, state.reason = "rolled_back", f"the monitor failed it: {why}"
        outcome = None
        if self.rollback is not None:
            step = RunStep(Phase.AUTO_ROLLBACK, f"roll back automatically: {why}")
            try:
                with self.ctx.phase(step) as detail:
                    outcome = self.rollback(self.ctx, trigger="automatic", reason=why)
                    detail.update(rollback_run=outcome.run_id, ok=outcome.ok,
                                  summary=outcome.summary)  # fmt: skip
                    if not outcome.ok:
                        raise CheckFailed(f"the automatic rollback failed: {outcome.error}")
            except DhashError as exc:
                state.reason += f"; {exc.message}"
        write_state(self.env, state)
        put_back = outcome is not None and outcome.ok
        self.ctx.finish(False, {"error": state.reason, "outcome": "rolled_back"})
        self.say(f"canary {state.version} promoted, then {state.reason}")
        summary = outcome.summary if outcome else "no rollback was available"
        self.notice("failure", "ERROR" if put_back else "CRITICAL", state.version,
                    f"canary {state.version} promoted, then failed by the monitor ({why}); "
                    f"{summary}")  # fmt: skip
