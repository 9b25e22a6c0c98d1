"""The decisions of a data-restoring rollback on a fleet, pure functions of gathered facts.

The hosts share one database, so a restore may not happen while any of them can write, and an
old release must not serve beside a new one on the restored data: every host is drained in
HAProxy and stopped before the export (the ones the deploy never touched too), the database is
restored once, and only then is each host brought back: switched to the target release if the
deploy touched it, started again on its own release if not, checked, put back.

:func:`plan_fleet_restore` decides which hosts, which order and what each one runs after the
restore; :func:`plan_serve_again` is the way back when the rollback fails before the database
was replaced (every host on what it served); :func:`touched_hosts` and :func:`hosts_back` read
the journal's ``host:<name>`` records (a deploy's, and the interrupted rollback's own, so a
resumed run skips the hosts already back). :func:`goes_back` decides which host steps wait the
longer readiness of a switch back (a rollback goes back to a release that served).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from dhash_rollout.runs.plan import Phase, Plan, Step

HOST_PHASE = "host:"  # the same record name a fleet deploy journals each host under
Action = Literal["switch", "start"]

# A host's states in a restoring rollback, journaled as ``host:<name>`` records.
DRAINING, STOPPED, SWITCHING, STARTING, CHECKING, READY, FAILED = (
    "draining", "stopped", "switching", "starting", "checking", "ready", "failed",
)  # fmt: skip


@dataclass(frozen=True)
class HostFacts:
    name: str
    serving: str | None  # the release its ``current`` names; None: unreadable (unreachable)
    touched: bool  # the deploy being rolled back switched it (or nothing says it did not)
    error: str | None = None  # why its release could not be read
    previous: str | None = None  # the release it served before ``serving``


@dataclass(frozen=True)
class HostStep:
    """What one host does once the database is restored."""

    host: str
    action: Action  # switch: to the target release; start: its own release again
    version: str
    touched: bool
    back: bool = False  # to a release the host served: the longer readiness wait (goes_back)

    def describe(self) -> str:
        if self.action == "switch":
            return f"{self.host}: switch to {self.version}"
        why = "" if self.touched else ", not touched by the deploy"
        return f"{self.host}: start {self.version} again{why}"


@dataclass(frozen=True)
class FleetRestorePlan:
    stop: tuple[str, ...]  # every host: drained, then stopped, before the export
    batches: tuple[tuple[HostStep, ...], ...]  # after the restore, one batch after the other
    back: tuple[str, ...] = ()  # already back in the run being resumed: left serving
    touched: tuple[str, ...] = ()
    refusal: str | None = None  # why the restore may not begin (before any outage)

    @property
    def steps(self) -> tuple[HostStep, ...]:
        return tuple(step for batch in self.batches for step in batch)

    def stop_action(self) -> str:
        return (
            f"drain every host in HAProxy and stop it ({', '.join(self.stop)}: they share the "
            "database), then export the rows written since the backup"
        )

    def bring_back_action(self) -> str:
        parts = [
            f"batch {n}: " + "; ".join(s.describe() for s in batch)
            for n, batch in enumerate(self.batches, 1)
        ]
        if self.back:
            parts.append(f"already back: {', '.join(self.back)}")
        return "on the restored database, each host checked and put back: " + " / ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stop": list(self.stop),
            "batches": [[s.__dict__ for s in batch] for batch in self.batches],
            "back": list(self.back),
            "touched": list(self.touched),
            "refusal": self.refusal,
        }


def goes_back(version: str, host: HostFacts, served: Iterable[str] = ()) -> bool:
    """Whether a rollback's step to ``version`` on ``host`` is a switch back, waiting at least
    the back readiness (``FleetHosts.switch(back=True)``): the host served that release (its
    own, started again; the one before it), or the rollback knows it served (``served``: the
    release the undone deploy replaced). A release named with ``--to-release`` that never
    served here keeps the environment's shorter timeout, as a new release does."""
    return version in {host.serving, host.previous, *served}


def hosts_going_back(
    hosts: Sequence[HostFacts], version: str, served: Iterable[str] = ()
) -> frozenset[str]:
    """The hosts whose switch to ``version`` (a plain rollback's) is a switch back."""
    known = tuple(served)
    return frozenset(h.name for h in hosts if goes_back(version, h, known))


def plan_fleet_restore(
    hosts: Sequence[HostFacts],
    target: str,
    back: Iterable[str] = (),
    served: Iterable[str] = (),
) -> FleetRestorePlan:
    """Every host stops; after the restore, batch 1 starts the hosts already on their release
    (the target, or one the deploy never touched: it served this schema before), batch 2
    switches the touched ones to ``target``; each batch runs its hosts in parallel. Hosts in
    ``back`` (journaled ready by the interrupted run being resumed) are left serving. A host
    whose release cannot be read refuses the plan (it may still be writing): a first run stops
    there, before any outage; a resumed one, its hosts already stopped, tries to switch it."""
    already = frozenset(back)
    known = tuple(served)
    names = tuple(h.name for h in hosts)
    touched = tuple(h.name for h in hosts if h.touched)
    unread = [h for h in hosts if h.serving is None and h.name not in already]
    refusal = None
    if unread:
        named = "; ".join(f"{h.name}: {h.error or 'no release'}" for h in unread)
        refusal = (
            f"every host must be stopped before the shared database is restored, and the "
            f"release of {', '.join(h.name for h in unread)} cannot be read ({named})"
        )
    starts: list[HostStep] = []
    switches: list[HostStep] = []
    for h in hosts:
        if h.name in already:
            continue
        if h.serving is not None and (h.serving == target or not h.touched):
            starts.append(HostStep(h.name, "start", h.serving, h.touched, back=True))
        else:  # unreadable: only a resumed run gets here (a first one is refused), try it
            switches.append(
                HostStep(h.name, "switch", target, h.touched, goes_back(target, h, known))
            )
    batches = tuple(tuple(b) for b in (starts, switches) if b)
    back_now = tuple(n for n in names if n in already)
    return FleetRestorePlan(names, batches, back_now, touched, refusal)


def with_fleet_steps(plan: Plan, fleet: FleetRestorePlan) -> Plan:
    """The rollback plan with its stop and its switch said for every host; a refusal is the
    plan's warning (the run is refused before any outage)."""

    def said(step: Step) -> Step:
        if step.run and step.phase == Phase.EXPORT_WRITES:
            return replace(step, action=fleet.stop_action())
        if step.run and step.phase == Phase.ACTIVATE and fleet.batches:
            return replace(step, action=fleet.bring_back_action())
        return step

    steps = [said(step) for step in plan.steps]
    warnings = (*plan.warnings, *((f"refused before any outage: {fleet.refusal}",)
                                  if fleet.refusal else ()))  # fmt: skip
    return Plan(plan.kind, plan.env, plan.version, tuple(steps), warnings)


def plan_serve_again(serving: Mapping[str, str | None]) -> FleetRestorePlan:
    """The way back when the rollback fails before the database was replaced (or after the
    database that served was put back): every host starts again on the release it serves,
    all in one batch (each a switch back: it served that release until the rollback stopped
    it); a host with no readable release is left out (and named by the caller)."""
    steps = tuple(
        HostStep(name, "start", version, False, back=True)
        for name, version in serving.items()
        if version is not None
    )
    return FleetRestorePlan(tuple(serving), (steps,) if steps else ())


def host_records(records: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, str]:
    """Each host's last journaled state, from ``(phase, detail)`` records of one run."""
    states: dict[str, str] = {}
    for phase, detail in records:
        if phase.startswith(HOST_PHASE) and "state" in detail:
            states[phase[len(HOST_PHASE) :]] = str(detail["state"])
    return states


def touched_hosts(deploy_states: Mapping[str, str] | None, serving: Mapping[str, str | None],
                  target: str) -> frozenset[str]:  # fmt: skip
    """The hosts the deploy being rolled back touched: every one with a state other than
    pending in its journal; without a fleet deploy's journal, every host not on ``target``
    (nothing says the deploy left it alone)."""
    if deploy_states is None:
        return frozenset(n for n, v in serving.items() if v != target)
    return frozenset(n for n, s in deploy_states.items() if s != "pending")


def hosts_back(rollback_states: Mapping[str, str]) -> frozenset[str]:
    """The hosts an interrupted restoring rollback had already put back."""
    return frozenset(n for n, s in rollback_states.items() if s == READY)
