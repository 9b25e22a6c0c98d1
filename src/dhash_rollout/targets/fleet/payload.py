"""A dhash release as the payload of a fleet host: what installing, switching and checking it
are on the host, as the engine's shell commands (:mod:`.agent` runs on the host).

- install (inert, before the first wave): the release's wheel is uploaded with pyinfra's
  ``files.put`` to ``<root>/incoming/`` and installed there by the agent into
  ``<root>/releases/<v>``, with the release's own settings;
- switch (in its wave, drained): the agent's blue/green activation under the host's root
  (supervisord slots, the new process's own ``/ready`` before ``current`` moves), fenced: a
  switch sent before one that already ran on the host is refused (a killed controller's);
- shutdown (a rollback's stop around a restore, ``dhash release stop``): the slots and
  supervisord stopped, fenced as a switch is, so a killed controller's late switch cannot start
  a host again after a later stop, nor its late stop take down a host a later step started;
- check: the host's real ``/health`` and ``/ready`` on its own address, from the host.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dhash_rollout.environments import Environment, HostSettings
from dhash_rollout.targets.fleet.agent import (
    HostSpec,
    activate_command,
    fenced,
    incoming,
    install_command,
    shutdown_command,
)
from dhash_rollout.targets.fleet.engine import run_step

BACK_READY_SECONDS = 60.0  # the least a switch back waits for the old release to be ready


@dataclass(frozen=True)
class DhashReleases:
    """The :class:`~dhash_rollout.targets.fleet.hosts.HostCommands` of a dhash release."""

    env: Environment
    check_timeout: float = 5.0

    def spec(self, host: HostSettings) -> HostSpec:
        return HostSpec.for_host(host, self.env)

    def switch(self, host: HostSettings, version: str, *, back: bool = False) -> list[str]:
        """The blue/green switch, fenced by when it was sent (:func:`.agent.fenced`): a step
        of a killed controller that lands after a newer one is refused. A switch ``back`` (an
        undo, to the release the host served) waits at least :data:`BACK_READY_SECONDS` for
        that release to be ready: the environment's ready timeout gives a *new* release up
        soon, but giving up on the old one leaves the host off the fleet (at load ~9 a
        release's start took longer than the tests' 15 s)."""
        spec = self.spec(host)
        if back:
            spec = replace(spec, ready_timeout=max(spec.ready_timeout, BACK_READY_SECONDS))
        return [fenced(host.root, time.time_ns(), activate_command(host, spec, version))]

    def check(self, host: HostSettings) -> list[str]:
        curl = f"curl -fsS -o /dev/null --max-time {self.check_timeout:g}"
        return [
            f"{curl} {shlex.quote(host.url + path)} || "
            f"{{ echo '{path} of {host.name} did not answer 200' >&2; exit 1; }}"
            for path in ("/health", "/ready")
        ]

    def install(
        self,
        hosts: Sequence[HostSettings],
        wheel: Path,
        *,
        known_hosts: Path,
        settings: Mapping[str, str] | None = None,
        parallel: int = 1,
        connect_timeout: int = 10,
    ) -> dict[str, str | None]:
        """Upload ``wheel`` to every host and install it there; each host's error or None."""
        results = run_step(
            hosts,
            {h.name: [install_command(h, self.spec(h), wheel.name, settings)] for h in hosts},
            uploads={h.name: [(str(wheel), incoming(h, wheel.name))] for h in hosts},
            step=f"install {wheel.name}", known_hosts=known_hosts, parallel=parallel,
            connect_timeout=connect_timeout,
        )  # fmt: skip
        return {n: (None if r.ok else r.error or "failed") for n, r in results.items()}

    def shutdown(
        self, hosts: Sequence[HostSettings], *, known_hosts: Path, parallel: int = 1
    ) -> dict[str, str | None]:
        """Stop every host's service, each fenced (:func:`.agent.fenced`) like a switch."""
        results = run_step(
            hosts,
            {h.name: [fenced(h.root, time.time_ns(), shutdown_command(h, self.spec(h)))]
             for h in hosts},
            step="shutdown", known_hosts=known_hosts, parallel=parallel,
        )  # fmt: skip
        return {n: (None if r.ok else r.error or "failed") for n, r in results.items()}
