"""A fleet's hosts as the wave executor sees them: take one out of the proxy, switch a set of
them to a release through the engine, check one, put it back.

:class:`ProxiedHosts` composes the two real pieces: HAProxy's runtime API for the proxy side
(drain, ready) and the pyinfra connector for the host side (the switch and the health check
run on the hosts, in parallel within a call). What the switch and the check *are* on a host is
a :class:`HostCommands`: the shell commands for one host, so the executor and the proxy logic
do not depend on how a release is laid out on the host.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dhash_rollout.environments import HostSettings, ProxySettings
from dhash_rollout.targets.fleet.engine import run_step
from dhash_rollout.targets.fleet.haproxy import HAProxyRuntime, ProxyError


class FleetHosts(Protocol):
    """Each call returns None on success or the reason it failed; failures of one host never
    raise, so a wave can count them against its budget."""

    def drain(self, host: str) -> str | None: ...

    def switch(
        self, hosts: Sequence[str], version: str, *, back: bool = False
    ) -> Mapping[str, str | None]: ...

    def check(self, hosts: Sequence[str]) -> Mapping[str, str | None]: ...

    def ready(self, host: str) -> str | None: ...


class HostCommands(Protocol):
    # back: a switch back to the release the host served (an undo), known to have served
    def switch(self, host: HostSettings, version: str, *, back: bool = False) -> list[str]: ...

    def check(self, host: HostSettings) -> list[str]: ...


@dataclass
class ProxiedHosts:
    hosts: Mapping[str, HostSettings]
    proxy: ProxySettings
    commands: HostCommands
    known_hosts: Path
    parallel: int = 1
    ready_timeout: float = 30.0
    connect_timeout: int = 10  # SSH: a host that does not answer in this is reported failed

    @property
    def runtime(self) -> HAProxyRuntime:
        return HAProxyRuntime(self.proxy.runtime_api)

    def drain(self, host: str) -> str | None:
        try:
            self.runtime.drain(self.proxy.backend, host, self.proxy.drain_timeout_seconds)
        except ProxyError as exc:
            return exc.message
        return None

    def ready(self, host: str) -> str | None:
        try:
            self.runtime.set_weight(self.proxy.backend, host, self.hosts[host].weight)
            self.runtime.ready(self.proxy.backend, host, self.ready_timeout)
        except ProxyError as exc:
            return exc.message
        return None

    def _on_hosts(
        self, step: str, names: Sequence[str], build: dict[str, list[str]]
    ) -> dict[str, str | None]:
        chosen = [self.hosts[n] for n in names]
        results = run_step(
            chosen, build, step=step, known_hosts=self.known_hosts, parallel=self.parallel,
            connect_timeout=self.connect_timeout,
        )  # fmt: skip
        return {n: (None if results[n].ok else results[n].error or "failed") for n in names}

    def switch(
        self, hosts: Sequence[str], version: str, *, back: bool = False
    ) -> dict[str, str | None]:
        build = {n: self.commands.switch(self.hosts[n], version, back=back) for n in hosts}
        return self._on_hosts(f"switch to {version}", hosts, build)

    def check(self, hosts: Sequence[str]) -> dict[str, str | None]:
        build = {n: self.commands.check(self.hosts[n]) for n in hosts}
        return self._on_hosts("health", hosts, build)
