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
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
from dhash_rollout.canary.schema_rule import contract_steps
from dhash_rollout.canary.traffic import Members, clear, map_members, set_weight
from dhash_rollout.environments import Environment
from dhash_rollout.releases import ReleaseSource
from dhash_rollout.runs.schema import (
    database_revision,
    migrate_with,
    pending_migrations,
    release_head,
    release_revisions,
)
from dhash_rollout.targets.local import LocalTarget
from dhash_rollout.targets.local.readiness import descends_from
from dhash_service.errors import CheckFailed, NotFound

PROBE_WEIGHT = 2.0  # % of new connections while the candidate starts, so readiness can see it
Say = Callable[[str], None]


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
    status: str  # running, aborted, promoted, inconclusive, interrupted
    started_at: float
    reason: str = ""
    config: dict[str, Any] | None = None  # the judge's settings, so status replays the same


def config_to_json(config: JudgeConfig) -> dict[str, Any]:
    return {
        "steps": [[s.weight, s.seconds] for s in config.steps],
        "alpha": config.alpha,
        "min_samples": config.min_samples,
        "max_wait_seconds": config.max_wait_seconds,
    }


def config_of(state: CanaryState) -> JudgeConfig:
    """The judge settings a canary ran with (the defaults for a state written without them)."""
    if not state.config:
        return JudgeConfig()
    c = state.config
    return JudgeConfig(
        steps=tuple(Step(float(w), float(t)) for w, t in c["steps"]),
        alpha=float(c["alpha"]),
        min_samples=int(c["min_samples"]),
        max_wait_seconds=float(c["max_wait_seconds"]),
    )


def _state_path(env: Environment) -> Path:
    return canary_dir(env) / "state.json"


def _ledger_path(env: Environment) -> Path:
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


def _write_state(env: Environment, state: CanaryState) -> None:
    path = _state_path(env)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".state.json.tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2), encoding="utf-8")
    os.replace(tmp, path)


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
        lines = _ledger_path(env).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    polls = []
    for number, line in enumerate(lines, 1):
        try:
            polls.append(poll_from_json(json.loads(line)))
        except (ValueError, KeyError, TypeError) as exc:
            if number == len(lines):
                break  # a last line cut short by a crash: the polls before it stand
            raise CheckFailed(f"{_ledger_path(env)} line {number}: {exc}") from exc
    return polls


def judgements(env: Environment, config: JudgeConfig) -> list[Judgement]:
    """The judgement of every recorded poll, replayed through the same judge."""
    return replay(read_ledger(env), config)


class CanaryRun:
    def __init__(
        self,
        env: Environment,
        target: LocalTarget,
        config: JudgeConfig,
        *,
        interval_s: float = 30.0,
        say: Say = lambda _m: None,
        base: Path | None = None,
    ) -> None:
        self.env = env
        self.base = base or Path.cwd()  # where the environments file is (release commands)
        self.target = target
        self.config = config
        self.interval_s = interval_s
        self.say = say
        self.port = env.port

    # --- start ---------------------------------------------------------------------------
    def start(self, source: ReleaseSource | None, version: str | None) -> CanaryState:
        existing = read_state(self.env)
        if existing is not None and existing.status in ("running", "inconclusive"):
            raise CheckFailed(
                f"a canary of {existing.version} is already {existing.status} in "
                f"{self.env.name}: promote or abort it first"
            )
        stable = self.target.current()
        if stable is None:
            raise NotFound(f"no stable release in {self.env.name}: deploy one first")
        if source is not None:
            release = self.target.install(source, version=version, progress=self.say)
            version = release.version
        if version is None:
            raise CheckFailed("say which release: --source or --version")
        self._schema_for(version)
        serving = [
            s for s in self.target.supervisor.slots()
            if s.release == stable.version and s.state == "RUNNING"
        ]  # fmt: skip
        if not serving or serving[0].pid is None:
            raise CheckFailed(f"the stable release {stable.version} is not running")
        stable_pid = serving[0].pid
        workers = self.target.workers
        stable_idx = tuple(range(workers))
        # Before the candidate listens: a small share for the indices it will take, so its
        # readiness probes reach it and stable keeps (nearly) all the traffic meanwhile.
        set_weight(
            self.port,
            Members(canary=tuple(range(workers, 2 * workers)), stable=stable_idx),
            PROBE_WEIGHT,
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
        _ledger_path(self.env).write_text("", encoding="utf-8")
        request_path(self.env).unlink(missing_ok=True)
        state = CanaryState(
            version=version,
            stable=stable.version,
            slot=slot,
            slot_pid=slot_pid,
            stable_pid=stable_pid,
            members={"canary": list(members.canary), "stable": list(members.stable)},
            weight=weight,
            status="running",
            started_at=time.time(),
            config=config_to_json(self.config),
        )
        _write_state(self.env, state)
        self.say(f"{version} takes {weight:g}% of new connections beside {stable.version}")
        return state

    def _schema_for(self, version: str) -> None:
        """Refuse a candidate whose pending migrations contract the schema stable runs on; run
        the expand-only ones now, before it starts (docs/canary.md, docs/migrations.md)."""
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
        self.say(f"running {len(pending)} expand-only migration(s) before the canary starts")
        migrate_with(release, self.env, self.base, None)

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

    def run(self, state: CanaryState, stop: Callable[[], bool]) -> Judgement | None:
        """Poll and judge until the canary ends, is held (inconclusive) or ``stop()``."""
        judge = start(self.config, 0.0)
        for p in read_ledger(self.env):  # a resumed run continues the same evidence
            judge, _ = observe(judge, p, self.config)
        classify = self._classify(state)
        before: dict[str, Snapshot] = read_releases(self.port, classify)
        last: Judgement | None = judge.last
        t0 = state.started_at
        while not stop():
            deadline = time.monotonic() + self.interval_s
            while time.monotonic() < deadline and not stop() and not self._requested():
                time.sleep(min(0.2, self.interval_s))
            wanted = self._requested()
            if stop() and not wanted:
                break
            now = read_releases(self.port, classify)
            poll = Poll(
                time.time() - t0,
                self._increments(before, now, "canary"),
                self._increments(before, now, "stable"),
            )
            before = {**before, **now}
            with _ledger_path(self.env).open("a", encoding="utf-8") as ledger:
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
                _write_state(self.env, state)
                return last
            if judge.step != step:
                state.weight = self.config.steps[judge.step].weight
                set_weight(self.port, self._members(state), state.weight)
                _write_state(self.env, state)
                self.say(f"{state.version} now takes {state.weight:g}% of new connections")
        state.status = "interrupted"
        _write_state(self.env, state)
        return last

    def _requested(self) -> str | None:
        try:
            return request_path(self.env).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def _increments(
        self, before: dict[str, Snapshot], now: dict[str, Snapshot], name: str
    ) -> ReleasePoll:
        if name not in now:  # did not answer /health 200 on any connection: not healthy
            return ReleasePoll(0, 0, Histogram.empty(self.config.bounds), healthy=False)
        poll = increments(before.get(name), now[name], healthy=True)
        if poll.hash_times.bounds != self.config.bounds:
            raise CheckFailed(
                f"the {name} release's hash-time buckets differ from this toolkit's: "
                "its histogram cannot be compared"
            )
        return poll

    # --- the ends ------------------------------------------------------------------------
    def abort(self, state: CanaryState, reason: str) -> None:
        """The candidate out of rotation, then stopped (it drains); stable untouched."""
        members = self._members(state)
        set_weight(self.port, Members(members.stable, members.stable), 0)
        self.target.retire_slot(state.slot, progress=self.say)
        clear(self.port)  # stable alone: the kernel's own spreading, as before the canary
        state.status, state.weight, state.reason = "aborted", 0.0, reason
        _write_state(self.env, state)
        request_path(self.env).unlink(missing_ok=True)
        self.say(f"canary {state.version} aborted: {reason}")

    def promote(self, state: CanaryState, reason: str) -> None:
        """The target's normal switch: everything to the candidate, ``current`` moves, stable
        drains and stops."""
        self.target.activate(state.version, progress=self.say)
        state.status, state.weight, state.reason = "promoted", 100.0, reason
        _write_state(self.env, state)
        request_path(self.env).unlink(missing_ok=True)
        self.say(f"canary {state.version} promoted: {reason}")
