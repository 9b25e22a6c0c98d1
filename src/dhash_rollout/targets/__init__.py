"""Where a release runs. The pipeline speaks only this protocol, so a Kubernetes or SSH-fleet
target can be added beside ``local`` without touching deploy or rollback logic.

A target installs releases (inert: nothing running changes), activates one (the zero-downtime
switch, idempotent so a re-run after a crash converges), and reports what is current, what was
previous and how the processes are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from dhash_rollout.environments import Environment
from dhash_rollout.releases import DepsMode, Release, ReleaseSource
from dhash_service.errors import ConfigError

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Activation:
    """The outcome of a switch: which release serves now and which one it replaced."""

    version: str
    previous: str | None
    instance: str
    changed: bool  # False when the release was already the active one (idempotent re-run)
    steered: bool = False  # new connections were steered to the new process while the old drained


@dataclass(frozen=True)
class ProcessStatus:
    name: str
    release: str | None
    state: str  # supervisord state name (RUNNING, STOPPED, FATAL, ...) or the target's own
    pid: int | None = None


@dataclass(frozen=True)
class TargetStatus:
    current: str | None
    previous: str | None
    processes: tuple[ProcessStatus, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def serving(self) -> tuple[ProcessStatus, ...]:
        return tuple(p for p in self.processes if p.state == "RUNNING")

    def to_dict(self) -> dict[str, Any]:
        return {
            "current": self.current,
            "previous": self.previous,
            "processes": [p.__dict__ for p in self.processes],
            **self.extra,
        }


class Releases(Protocol):
    """The releases a target holds: installing one changes nothing that serves."""

    def install(
        self, source: ReleaseSource, *, version: str | None = None, progress: Progress | None = None
    ) -> Release:
        """Make the release available without changing what serves (idempotent)."""
        ...

    def release(self, version: str) -> Release | None:
        """The installed release ``version``, or None."""
        ...

    def releases(self) -> list[Release]: ...

    def current(self) -> Release | None: ...

    def previous(self) -> Release | None: ...


class Serving(Protocol):
    """What serves, and the switch: all a deploy or a rollback asks of a target."""

    def activate(self, version: str, *, progress: Progress | None = None) -> Activation:
        """Switch serving to ``version`` with no failed request; converge when re-run."""
        ...

    def status(self) -> TargetStatus: ...

    def start(self, *, progress: Progress | None = None) -> Activation:
        """Serve the current release again (after :meth:`stop`, a crash or a reboot)."""
        ...

    def stop(self) -> None:
        """Stop serving (used to take writes away before a data restore)."""
        ...

    def deactivate(self) -> None:
        """Stop serving and leave no current release (undoing a failed first deploy)."""
        ...


class DeployTarget(Releases, Serving, Protocol):
    """The narrow side deploy and rollback see: releases and the switch, nothing else."""

    env: Environment


class Target(DeployTarget, Protocol):
    """A deployment target: its releases, what serves, and the operator's tools."""

    def logs(self, lines: int = 100) -> str: ...

    def shutdown(self) -> None:
        """Stop serving and the target's own machinery (process manager)."""
        ...


TargetFactory = Callable[[Environment, "DepsMode | None"], Target]


def _local(env: Environment, deps: DepsMode | None) -> Target:
    from dhash_rollout.targets.local import LocalTarget

    return LocalTarget(env, deps=deps)


def _fleet(env: Environment, deps: DepsMode | None) -> Target:
    from dhash_rollout.targets.fleet.target import FleetTarget

    return FleetTarget(env, deps=deps)


# The seam for other targets: each registers its factory here under the name an environment's
# ``target`` key gives (``fleet``: hosts behind HAProxy, targets/fleet/target.py).
FACTORIES: dict[str, TargetFactory] = {"local": _local, "fleet": _fleet}


def get_target(env: Environment, *, deps: DepsMode | None = None) -> Target:
    """The target named by the environment's ``target`` (``local`` by default)."""
    factory = FACTORIES.get(env.target)
    if factory is None:
        known = ", ".join(sorted(FACTORIES))
        raise ConfigError(f"environment {env.name}: unknown target {env.target!r} (known: {known})")
    return factory(env, deps)
