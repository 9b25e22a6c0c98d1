"""A fleet on this machine for bench-fleet's orchestration costs: namespace hosts
(tests/support/netns_hosts.py), each an sshd (the engine's way in) and an HTTP server serving
its ``current`` release directory, behind a real HAProxy health-checking ``/ready``.

A release here is a directory with an ``index.html`` and, when good, a ``ready`` file; the
switch is the local target's layout (``current`` -> ``releases/<v>``, atomic rename) run
through pyinfra. The executor, the proxy client and the engine are the real ones; the
payload is not dhash's: the end-to-end tests run real dhash releases on
tests/support/dhash_fleet.py instead.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from dhash_rollout.environments import HostSettings, ProxySettings
from dhash_rollout.targets.fleet.haproxy import HAProxyRuntime
from dhash_rollout.targets.fleet.hosts import ProxiedHosts
from tests.support.haproxy import running_haproxy
from tests.support.netns_hosts import Fleet, namespace_fleet

PORT = 18080


class SymlinkReleases:
    """The switch: point ``current`` at ``releases/<v>`` (atomic rename); the check: the
    host's own HTTP server answers ``/ready`` through its address."""

    def switch(self, host: HostSettings, version: str, *, back: bool = False) -> list[str]:
        root = host.root
        return [
            f"test -d {root}/releases/{version} || {{ echo 'no release {version}' >&2; exit 1; }}",
            f"ln -sfn {root}/releases/{version} {root}/current.new",
            f"mv -T {root}/current.new {root}/current",
        ]

    def check(self, host: HostSettings) -> list[str]:
        return [f"curl -fsS --max-time 5 http://{host.address}:{host.port}/ready"]


@dataclass
class Site:
    fleet: Fleet
    hosts: ProxiedHosts
    url: str
    runtime: HAProxyRuntime


def _release(root: Path, version: str, *, good: bool) -> None:
    path = root / "releases" / version
    path.mkdir(parents=True, exist_ok=True)
    (path / "index.html").write_text(version)
    if good:
        (path / "ready").write_text("ready")


@contextmanager
def fleet_site(tmp: Path, names: list[str], *, parallel: int = 3) -> Iterator[Site]:
    """``names`` namespace hosts serving release v1 (v2 good, v3 bad also installed) behind
    HAProxy, with the real ProxiedHosts over them; everything stopped on exit."""
    with namespace_fleet(tmp, names) as fleet:
        servers = []
        for host in fleet.hosts:
            for version, good in (("v1", True), ("v2", True), ("v3", False)):
                _release(host.root, version, good=good)
            (host.root / "current").symlink_to(host.root / "releases" / "v1")
        for host in fleet.hosts:
            servers.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        host.namespace,
                        sys.executable,
                        "-m",
                        "http.server",
                        str(PORT),
                        "--bind",
                        host.address,
                        "--directory",
                        str(host.root / "current"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        try:
            backends = [(h.name, h.address, PORT) for h in fleet.hosts]
            with running_haproxy(tmp, backends) as proxy:
                settings = {
                    h.name: HostSettings(name=h.name, address=h.address, port=PORT,
                                         ssh_key=str(fleet.client_key), root=str(h.root))
                    for h in fleet.hosts
                }  # fmt: skip
                hosts = ProxiedHosts(
                    settings,
                    ProxySettings(runtime_api=proxy.runtime_api, drain_timeout_seconds=10),
                    SymlinkReleases(),
                    known_hosts=tmp / "known_hosts",
                    parallel=parallel,
                    ready_timeout=15,
                    connect_timeout=3,
                )
                runtime = HAProxyRuntime(proxy.runtime_api)
                for name in settings:
                    runtime.wait_for("dhash", name, lambda s: s.up, what="UP", timeout=15)
                yield Site(fleet, hosts, proxy.url, runtime)
        finally:
            for server in servers:
                server.kill()
                server.wait(timeout=10)


class Load:
    """Requests through the proxy, back to back, until stopped: what clients saw."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.failed: list[str] = []
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                try:
                    answer = client.get("/index.html")
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                    continue
                if answer.status_code == 200:
                    self.ok += 1
                    self.seen.add(answer.text)
                else:
                    self.failed.append(str(answer.status_code))
                time.sleep(0.005)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def served(site: Site) -> dict[str, str]:
    """The release each host's ``current`` points at."""
    return {h.name: (h.root / "current").resolve().name for h in site.fleet.hosts}
