"""A fleet of real dhash hosts on this machine, for the fleet deploy's end-to-end tests.

Namespace hosts (tests/support/netns_hosts.py: a network namespace and an sshd each) behind a
real HAProxy that health-checks ``/ready``; every host serves a real dhash release installed
and activated *through the engine* (pyinfra over SSH: the wheel uploaded, the agent's
install and blue/green switch under the host's root, its own supervisord). All hosts share
one database: PostgreSQL through its unix socket, or an SQLite file (every namespace shares
this machine's filesystem, not its loopback).
The controller's side is a ``dhash-environments.toml`` with ``target = "fleet"``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from dhash_rollout import migrate
from dhash_rollout.environments import Environment, HostSettings, load_environment
from dhash_rollout.releases import ReleaseSource
from dhash_rollout.targets.fleet.haproxy import HAProxyRuntime
from dhash_rollout.targets.fleet.hosts import ProxiedHosts
from dhash_rollout.targets.fleet.payload import DhashReleases
from dhash_rollout.targets.fleet.target import FleetTarget
from tests.support.haproxy import running_haproxy
from tests.support.load import unique_png
from tests.support.netns_hosts import Fleet, namespace_fleet

PORT = 18080
ENV = "staging"  # faults may be injected (a bad release); production refuses them
TOKEN = "fleet-test-token-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_LOADS = itertools.count(1)  # each Load ingests images no other one did


@dataclass
class DhashSite:
    fleet: Fleet
    base: Path  # the controller's working directory (its environments file)
    env: Environment
    hosts: ProxiedHosts
    payload: DhashReleases
    url: str  # the proxy
    runtime: HAProxyRuntime
    known_hosts: Path

    def settings(self) -> list[HostSettings]:
        return list(self.hosts.hosts.values())

    def served(self) -> dict[str, str | None]:
        """The release each host's ``current`` points at, read on the filesystem."""
        out: dict[str, str | None] = {}
        for h in self.fleet.hosts:
            link = h.root / "current"
            out[h.name] = link.resolve().name if link.is_symlink() else None
        return out

    def answering(self) -> dict[str, str]:
        """The version each host's own service answers ``/health`` with (through its address)."""
        out = {}
        for h in self.settings():
            out[h.name] = httpx.get(f"{h.url}/health", timeout=5).json()["version"]
        return out


def _environments(
    base: Path, fleet: Fleet, runtime_api: str, proxy_url: str, db: str, *, metrics: str
) -> None:
    lines = [
        f"[{ENV}]",
        'target = "fleet"',
        f'root = "{base / "controller"}"',
        f'database_url = "{db}"',
        f'api_token = "{TOKEN}"',
        'release_deps = "shared"',
        'preflight = "warn"',
        "shutdown_grace_seconds = 2",
        "ready_timeout_seconds = 15",  # a bad release (its /ready failing) is given up sooner
        'channels = ["file"]',
    ]
    for h in fleet.hosts:
        lines += [
            f"[[{ENV}.hosts]]", f'name = "{h.name}"', f'address = "{h.address}"',
            f"port = {PORT}", f'ssh_key = "{fleet.client_key}"', f'root = "{h.root}"',
            f'python = "{sys.executable}"',
        ]  # fmt: skip
    lines += [
        f"[{ENV}.proxy]", f'runtime_api = "{runtime_api}"', f'url = "{proxy_url}"',
        "drain_timeout_seconds = 10", f'metrics_address = "{metrics}"',
        f"[{ENV}.waves]", 'sizes = [1, "100%"]', "max_fail_percentage = 0", "parallel = 3",
        "gate_seconds = 60",  # nominal: run with --time-scale
    ]  # fmt: skip
    (base / "dhash-environments.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _stop_supervisors(fleet: Fleet) -> None:
    """Whatever the agent's shutdown left: each host's supervisord, by its pid file."""
    for h in fleet.hosts:
        pidfile = h.root / "supervisor" / "supervisord.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
    deadline = time.monotonic() + 15
    for h in fleet.hosts:
        pidfile = h.root / "supervisor" / "supervisord.pid"
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().strip())
            while time.monotonic() < deadline:
                os.kill(pid, 0)
                time.sleep(0.05)


@contextmanager
def dhash_fleet_site(
    tmp: Path, names: list[str], first: Path, database_url: str | None = None
) -> Iterator[DhashSite]:
    """``names`` hosts serving the release of the wheel ``first`` behind HAProxy, on
    ``database_url`` (an empty database every host reaches, e.g. PostgreSQL through its unix
    socket; default: an SQLite file)."""
    with namespace_fleet(tmp, names) as fleet:
        base = tmp / "controller-base"
        base.mkdir()
        if database_url is None:
            (tmp / "db").mkdir()
            database_url = f"sqlite:///{tmp / 'db' / 'dhash.sqlite3'}"
        migrate.upgrade(database_url)
        backends = [(h.name, h.address, PORT) for h in fleet.hosts]
        try:
            with running_haproxy(tmp, backends, check_timeout="3s") as proxy:
                _environments(
                    base,
                    fleet,
                    proxy.runtime_api,
                    proxy.url,
                    database_url,
                    metrics=proxy.metrics_address,
                )
                env = load_environment(ENV, base)
                assert env.settings.hosts is not None and env.settings.proxy is not None
                payload = DhashReleases(env)
                known_hosts = env.root / "fleet" / "known_hosts"
                settings = {h.name: h for h in env.settings.hosts}
                hosts = ProxiedHosts(
                    settings, env.settings.proxy, payload, known_hosts=known_hosts,
                    parallel=len(names), ready_timeout=30, connect_timeout=3,
                )  # fmt: skip
                version = first.name.split("-")[1]
                # On every host and the controller's copy, as the first `dhash deploy` leaves
                # them (a rollback to this release reads its schema head from that copy).
                FleetTarget(env).install(ReleaseSource("wheel", str(first)), version=version)
                switched = hosts.switch(list(settings), version)
                assert not any(switched.values()), switched
                runtime = HAProxyRuntime(proxy.runtime_api)
                for name in settings:
                    runtime.wait_for("dhash", name, lambda s: s.up, what="UP", timeout=30)
                yield DhashSite(fleet, base, env, hosts, payload, proxy.url, runtime, known_hosts)
        finally:
            _stop_supervisors(fleet)


@dataclass
class Load:
    """Requests through the proxy, back to back, until stopped: ``/health`` says which
    release answered, and every ``ingest_every``-th request is a real write (``POST
    /v1/images`` of a new image with the environment's token) whose acknowledged image ids
    are kept, so a test can check that none of them is lost (:meth:`lost`)."""

    url: str
    ingest_every: int = 3
    seed_base: int = field(default_factory=lambda: next(_LOADS) * 1_000_000)  # new images
    ok: int = 0
    failed: list[str] = field(default_factory=list)
    failed_at: list[float] = field(default_factory=list)  # when each failed request began
    seen: set[str] = field(default_factory=set)
    acknowledged: list[int] = field(default_factory=list)  # image ids of every 201
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _ingest(self, client: httpx.Client, n: int) -> httpx.Response:
        seed = self.seed_base + n
        files = {"file": (f"fleet-{seed}.png", unique_png(seed), "image/png")}
        answer = client.post("/v1/images", files=files, headers=AUTH)
        if answer.status_code == 201:
            self.acknowledged += [int(item["image_id"]) for item in answer.json()["items"]]
        return answer

    def _run(self) -> None:
        n = 0
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self._stop.is_set():
                n += 1
                write = self.ingest_every > 0 and n % self.ingest_every == 0
                began = time.time()
                try:
                    answer = self._ingest(client, n) if write else client.get("/health")
                except httpx.HTTPError as exc:
                    self.failed.append(repr(exc))
                    self.failed_at.append(began)
                    continue
                if write and answer.status_code == 201:
                    self.ok += 1
                elif answer.status_code == 200:
                    self.ok += 1
                    self.seen.add(json.loads(answer.text)["version"])
                else:
                    self.failed.append(str(answer.status_code))
                    self.failed_at.append(began)
                time.sleep(0.01)

    def lost(self) -> list[int]:
        """The acknowledged image ids the fleet (read through the proxy) no longer has."""
        with httpx.Client(base_url=self.url, timeout=10, headers=AUTH) as client:
            return [
                i for i in self.acknowledged if client.get(f"/v1/images/{i}").status_code != 200
            ]

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
