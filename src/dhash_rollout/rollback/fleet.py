"""A data-restoring rollback's host steps on a fleet: stop every host, bring each one back.

The rollback's phases stay the ordinary ones (:mod:`.run`); on a fleet two of them act on every
host, through the fleet target's proxy client and engine, as :mod:`.fleet_plan` decided:

- ``export_writes`` first drains each host in HAProxy (no new sessions, the open ones end) and
  stops its service (its slots and supervisord, in parallel through the engine); a host that
  cannot be confirmed stopped fails the phase before the database is touched (it might still
  write), and the hosts stopped are started again on the unchanged database;
- ``activate`` brings the hosts back batch by batch on the restored database: each one
  switched (or started), its own ``/health`` and ``/ready`` checked from the host, put back in
  HAProxy with its weight; a host that fails stays drained and is named. A step to a release
  the host served (the plan's ``back``) waits the longer readiness of a switch back.

Every step on a host (the stop, the switch, the start) is fenced on the host
(:func:`~dhash_rollout.targets.fleet.agent.fenced`): a killed controller's step still in flight
(a deploy's, or this rollback's own) is refused if it lands after the resumed run's.

Every host's state is journaled (``host:<name>`` records of the rollback run, before the step
they name), so a killed controller's next ``dhash rollback`` knows which hosts are back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dhash_rollout.rollback.fleet_plan import (
    CHECKING,
    DRAINING,
    FAILED,
    HOST_PHASE,
    READY,
    STARTING,
    STOPPED,
    SWITCHING,
    FleetRestorePlan,
    HostFacts,
    HostStep,
)
from dhash_rollout.runs.journal import Status
from dhash_rollout.targets.fleet.target import FleetTarget
from dhash_service.errors import CheckFailed

Record = Callable[[str, Status, Mapping[str, Any]], None]
Say = Callable[[str], None]


class FleetHostSteps:
    def __init__(self, target: FleetTarget, record: Record, say: Say) -> None:
        self.target = target
        self.record = record
        self.say = say

    def facts(self, touched: frozenset[str] | None) -> list[HostFacts]:
        """Each host's release as the host reads it (``touched=None``: every host counts as
        touched)."""
        return [
            HostFacts(s.name, s.release, touched is None or s.name in touched, s.error, s.previous)
            for s in self.target.host_statuses()
        ]

    def serving(self) -> dict[str, str | None]:
        return self.target.served()

    def _set(self, host: str, state: str, status: Status = "started", **detail: Any) -> None:
        self.record(f"{HOST_PHASE}{host}", status, {"state": state, **detail})

    def stop_all(self, names: Sequence[str]) -> None:
        """Drain every host, then stop them all; raises naming each host not confirmed out of
        rotation and stopped. Idempotent (a resumed run stops again what is stopped)."""
        hosts = self.target.hosts
        failed: dict[str, str] = {}
        for name in names:
            self._set(name, DRAINING)
            why = hosts.drain(name)
            if why:
                failed[name] = f"drain: {why}"
        chosen = [h for h in self.target.host_list if h.name in names]
        stopped = self.target.payload.shutdown(
            chosen, known_hosts=self.target.known_hosts, parallel=max(1, len(chosen))
        )
        for name in names:
            why = stopped.get(name, "no result from the engine")
            if why:
                failed.setdefault(name, f"stop: {why.strip().splitlines()[-1]}")
            if name in failed:
                self._set(name, FAILED, "failed", error=failed[name])
            else:
                self._set(name, STOPPED, "done")
        done = len(names) - len(failed)
        self.say(f"    stopped {done} of {len(names)} hosts: {', '.join(names)}")
        if failed:
            named = "; ".join(f"{h}: {why}" for h, why in failed.items())
            raise CheckFailed(
                f"not every host could be confirmed stopped ({named}); the shared database is "
                "not restored while a host may still write"
            )

    def bring_back(self, plan: FleetRestorePlan) -> dict[str, str]:
        """Each batch: its hosts switched or started together, checked, put back one by one;
        each failed host and why (it stays drained)."""
        hosts = self.target.hosts
        failed: dict[str, str] = {}
        for batch in plan.batches:
            by_version: dict[tuple[str, bool], list[HostStep]] = {}
            for step in batch:
                by_version.setdefault((step.version, step.back), []).append(step)
            for (version, back), steps in by_version.items():
                names = [s.host for s in steps]
                for s in steps:
                    self._set(s.host, SWITCHING if s.action == "switch" else STARTING,
                              version=version)  # fmt: skip
                switched = hosts.switch(names, version, back=back)
                checking = []
                for name in names:
                    why = switched.get(name, "no result from the engine")
                    if why:
                        failed[name] = f"{version}: {why.strip().splitlines()[-1]}"
                    else:
                        checking.append(name)
                        self._set(name, CHECKING, version=version)
                checked = hosts.check(checking) if checking else {}
                for name in checking:
                    why = checked.get(name, "no result from the engine") or hosts.ready(name)
                    if why:
                        failed[name] = f"health on {version}: {why.strip().splitlines()[-1]}"
                for name in names:
                    if name in failed:
                        self._set(name, FAILED, "failed", version=version, error=failed[name])
                    else:
                        self._set(name, READY, "done", version=version)
                        self.say(f"    {name}: on {version}, back in HAProxy")
        return failed
