"""The wave executor: runs a :class:`~dhash_rollout.deploy.waves.WavePlan` on a fleet.

Per wave, every host is drained in the proxy, then the wave's hosts are switched together
through the engine (parallel within the wave), checked, and put back. A host whose step fails
is left out of service (still drained) and counted against the wave's failure budget. After
the wave, the gate (the monitor's verdict for the wave's hosts and for the fleet) runs. A
breached budget or a failed gate stops the rollout: every host it touched is switched back to
the release it served before and put back (the ones still serving one at a time, so the fleet
never goes out of service at once); hosts it never touched are left alone.

Every state change of a host is journaled as a ``host:<name>`` record of the run *before* the
step it names runs, so a killed controller leaves each host's last known state in the journal
(:func:`host_states` reads it back; ``plan_waves(done=...)`` resumes from it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dhash_rollout.deploy.waves import HostState, Wave, WavePlan, hosts_to_undo
from dhash_rollout.runs.journal import RunState, Status
from dhash_rollout.targets.fleet.hosts import FleetHosts

Record = Callable[[str, Status, Mapping[str, Any]], None]  # RunContext.record
# Between waves: the monitor's verdict on the wave just done; None passes, a text stops.
WaveGate = Callable[[Wave], str | None]

HOST_PHASE = "host:"
WAVE_PHASE = "wave:"  # a wave's end: its hosts done and its gate passed


@dataclass
class FleetOutcome:
    ok: bool
    states: dict[str, HostState]
    stopped_at: int | None = None  # the wave that stopped the rollout
    reason: str | None = None  # why it stopped, naming the hosts
    failures: dict[str, str] = field(default_factory=dict)  # host -> why
    undone: tuple[str, ...] = ()
    undo_failures: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        if self.ok:
            return f"every host on the release: {', '.join(self.states)}"
        text = f"stopped at wave {self.stopped_at}: {self.reason}"
        if self.undone:
            text += f"; back on the old release: {', '.join(self.undone)}"
        if self.undo_failures:
            text += "; NOT put back: " + ", ".join(
                f"{h} ({why})" for h, why in self.undo_failures.items()
            )
        return text


def host_states(run: RunState, hosts: list[str]) -> dict[str, HostState]:
    """Each host's last journaled state in ``run`` (hosts without a record: pending)."""
    states = dict.fromkeys(hosts, HostState.PENDING)
    for phase, state in run.phases.items():
        if phase.startswith(HOST_PHASE) and phase[len(HOST_PHASE) :] in states:
            states[phase[len(HOST_PHASE) :]] = HostState(state.detail["state"])
    return states


@dataclass
class WaveExecutor:
    fleet: FleetHosts
    record: Record
    version: str
    previous: Mapping[str, str | None]  # what each host served before (to switch back to)
    gate: WaveGate | None = None
    states: dict[str, HostState] = field(default_factory=dict)

    def _set(self, host: str, state: HostState, wave: int, **detail: Any) -> None:
        self.states[host] = state
        statuses: dict[HostState, Status] = {
            HostState.READY: "done",
            HostState.ROLLED_BACK: "done",
            HostState.FAILED: "failed",
        }
        status = statuses.get(state, "started")
        self.record(
            f"{HOST_PHASE}{host}",
            status,
            {"state": str(state), "wave": wave, "version": self.version, **detail},
        )

    def _wave(self, wave: Wave) -> dict[str, str]:
        failures: dict[str, str] = {}
        switching: list[str] = []
        for host in wave.hosts:
            self._set(host, HostState.DRAINING, wave.number)
            why = self.fleet.drain(host)
            if why:
                failures[host] = f"drain: {why}"
                self._set(host, HostState.FAILED, wave.number, error=failures[host])
            else:
                switching.append(host)
        for host in switching:
            self._set(host, HostState.SWITCHING, wave.number)
        switched = self.fleet.switch(switching, self.version) if switching else {}
        checking = []
        for host in switching:
            why = switched.get(host, "no result from the engine")
            if why:
                failures[host] = f"switch: {why}"
                self._set(host, HostState.FAILED, wave.number, error=failures[host])
            else:
                checking.append(host)
                self._set(host, HostState.CHECKING, wave.number)
        checked = self.fleet.check(checking) if checking else {}
        for host in checking:
            why = checked.get(host, "no result from the engine") or self.fleet.ready(host)
            if why:
                failures[host] = f"health: {why}"
                self._set(host, HostState.FAILED, wave.number, error=failures[host])
            else:
                self._set(host, HostState.READY, wave.number)
        return failures

    def undo(self, wave: int) -> tuple[tuple[str, ...], dict[str, str]]:
        """Switch every touched host back to what it served, then put it back. The hosts out
        of rotation (failed, or stopped mid-step) go back together first; the ones serving
        the new release then one at a time, so the rest of the fleet keeps serving."""
        touched = hosts_to_undo(self.states)
        problems: dict[str, str] = {}
        undone: list[str] = []
        serving = [h for h in touched if self.states[h] == HostState.READY]
        batches = [[h for h in touched if h not in serving]] + [[h] for h in serving]
        for batch in batches:
            by_version: dict[str, list[str]] = {}
            for host in batch:
                old = self.previous.get(host)
                if old is None:
                    problems[host] = "no previous release to go back to"
                    continue
                why = self.fleet.drain(host)
                if why:
                    problems[host] = f"drain: {why}"
                    continue
                by_version.setdefault(old, []).append(host)
            for old, hosts in by_version.items():
                switched = self.fleet.switch(hosts, old, back=True)
                back = [h for h in hosts if not switched.get(h, "no result")]
                for h in hosts:
                    if h not in back:
                        problems[h] = f"switch back to {old}: {switched.get(h)}"
                checked = self.fleet.check(back) if back else {}
                for host in back:
                    why = checked.get(host, "no result") or self.fleet.ready(host)
                    if why:
                        problems[host] = f"health on {old}: {why}"
                        continue
                    undone.append(host)
                    self.states[host] = HostState.ROLLED_BACK
                    self.record(
                        f"{HOST_PHASE}{host}",
                        "done",
                        {"state": str(HostState.ROLLED_BACK), "wave": wave, "version": old},
                    )
        return tuple(undone), problems

    def run(self, plan: WavePlan) -> FleetOutcome:
        for host in plan.hosts:
            self.states.setdefault(host, HostState.PENDING)
        within_budget: dict[str, str] = {}
        for wave in plan.waves:
            failures = self._wave(wave)
            reason: str | None = None
            if wave.breached(len(failures)):
                named = "; ".join(f"{h}: {why}" for h, why in failures.items())
                reason = (
                    f"{len(failures)} of {len(wave.hosts)} hosts failed, over the budget of "
                    f"{wave.tolerated_failures} ({named})"
                )
            elif self.gate is not None:
                verdict = self.gate(wave)
                if verdict:
                    reason = f"the gates failed after wave {wave.number}: {verdict}"
            if reason:
                undone, problems = self.undo(wave.number)
                return FleetOutcome(
                    False, dict(self.states), wave.number, reason,
                    {**within_budget, **failures}, undone, problems,
                )  # fmt: skip
            within_budget.update(failures)  # left drained, out of service, and reported
            self.record(
                f"{WAVE_PHASE}{wave.number}", "done",
                {"hosts": list(wave.hosts), "failed": sorted(failures), "version": self.version},
            )  # fmt: skip
        return FleetOutcome(True, dict(self.states), failures=within_budget)
