"""The wave executor on real hosts behind a real HAProxy: three network-namespace hosts, each
an sshd (the engine's way in) and an HTTP server serving its ``current`` release directory;
HAProxy on the bridge health-checks ``/ready``. A release here is a directory with a ``ready``
file (a bad one has none), switched by a symlink through pyinfra: the executor, the proxy
client and the engine are the real ones, the release payload is not dhash's (docs: what is
left, in the branch note)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from dhash_rollout.deploy.fleet import WaveExecutor, host_states
from dhash_rollout.deploy.waves import HostState, plan_waves
from dhash_rollout.environments import HostSettings, ProxySettings
from dhash_rollout.runs.journal import Journal
from dhash_rollout.targets.fleet.haproxy import HAProxyRuntime
from dhash_rollout.targets.fleet.hosts import ProxiedHosts
from tests.support.haproxy import running_haproxy
from tests.support.netns_hosts import Fleet, available, namespace_fleet

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(available() is not None, reason=str(available())),
]
PORT = 18080


class SymlinkReleases:
    """The switch: point ``current`` at ``releases/<v>`` (atomic rename); the check: the
    host's own HTTP server answers ``/ready`` through its address."""

    def switch(self, host: HostSettings, version: str) -> list[str]:
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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("fleetlive")
    with namespace_fleet(tmp, ["web1", "web2", "web3"]) as fleet:
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
                    parallel=3,
                    ready_timeout=15,
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


def _served(site: Site) -> dict[str, str]:
    return {h.name: (h.root / "current").resolve().name for h in site.fleet.hosts}


def test_a_good_release_goes_out_in_waves_with_no_failed_request(
    site: Site, tmp_path: Path
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("fleet-1", "run", "started", {"kind": "deploy"})
    plan = plan_waves(list(site.hosts.hosts), [1, "100%"], 0)
    executor = WaveExecutor(
        site.hosts, lambda p, s, d: journal.append("fleet-1", p, s, d), "v2",
        previous=_served(site),
    )  # fmt: skip
    with Load(site.url) as load:
        outcome = executor.run(plan)
    assert outcome.ok, outcome.summary()
    assert _served(site) == {"web1": "v2", "web2": "v2", "web3": "v2"}
    assert load.failed == [] and load.ok > 20
    assert load.seen == {"v1", "v2"}  # old and new served side by side, then only new
    stats = {s.name: s for s in site.runtime.servers("dhash")}
    assert all(s.up and s.weight == 100 for s in stats.values())
    run = journal.run("fleet-1")
    assert run is not None
    assert host_states(run, ["web1", "web2", "web3"]) == dict.fromkeys(
        ["web1", "web2", "web3"], HostState.READY
    )


def test_a_bad_release_stops_after_the_first_wave_and_undoes_that_host_only(
    site: Site, tmp_path: Path
) -> None:
    assert _served(site) == {"web1": "v2", "web2": "v2", "web3": "v2"}
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("fleet-2", "run", "started", {"kind": "deploy"})
    plan = plan_waves(list(site.hosts.hosts), [1, "100%"], 0)
    executor = WaveExecutor(
        site.hosts, lambda p, s, d: journal.append("fleet-2", p, s, d), "v3",
        previous=_served(site),
    )  # fmt: skip
    with Load(site.url) as load:
        outcome = executor.run(plan)
    assert not outcome.ok
    assert outcome.stopped_at == 1
    assert "web1: health" in str(outcome.reason)
    assert outcome.undone == ("web1",), outcome.summary()
    assert outcome.states == {
        "web1": HostState.ROLLED_BACK, "web2": HostState.PENDING, "web3": HostState.PENDING
    }  # fmt: skip
    assert _served(site) == {"web1": "v2", "web2": "v2", "web3": "v2"}
    assert load.failed == []  # the bad host was drained before its switch, never served
    assert load.seen == {"v2"}
    assert all(s.up for s in site.runtime.servers("dhash"))
    run = journal.run("fleet-2")
    assert run is not None
    states = host_states(run, ["web1", "web2", "web3"])
    assert states["web1"] == HostState.ROLLED_BACK and states["web2"] == HostState.PENDING


def test_release_status_shows_every_host_its_release_and_its_proxy_state(
    site: Site, tmp_path: Path
) -> None:
    hosts = list(site.hosts.hosts.values())
    env_file = tmp_path / "dhash-environments.toml"
    lines = ["[production]", 'target = "fleet"', f'root = "{tmp_path / "env"}"']
    for h in hosts:
        lines += ["[[production.hosts]]", f'name = "{h.name}"', f'address = "{h.address}"',
                  f"port = {h.port}", f'ssh_key = "{h.ssh_key}"', f'root = "{h.root}"']  # fmt: skip
    lines += ["[production.proxy]", f'runtime_api = "{site.hosts.proxy.runtime_api}"']
    env_file.write_text("\n".join(lines) + "\n")
    site.runtime.set_weight("dhash", "web3", 40)
    try:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "dhash"), "release", "status", "--env",
             "production", "--json"],
            capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "DHASH_ENVIRONMENTS_FILE": str(env_file)},
        )  # fmt: skip
    finally:
        site.runtime.set_weight("dhash", "web3", 100)
    assert done.returncode == 0, done.stderr
    shown = {h["name"]: h for h in json.loads(done.stdout)["hosts"]}
    assert {n: (h["release"], h["proxy_status"]) for n, h in shown.items()} == {
        n: (_served(site)[n], "UP") for n in ("web1", "web2", "web3")
    }
    assert shown["web3"]["weight"] == 40 and shown["web1"]["weight"] == 100
