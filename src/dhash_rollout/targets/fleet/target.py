"""The fleet target (``target = "fleet"``, ``targets.FACTORIES["fleet"]``): service hosts
behind HAProxy, reached through the engine.

The controller keeps its own copy of each release under the environment's root (installed as
the local target installs one, never served): it is what the migrations run from and what the
deploy reads the pending revisions of (expand before the first wave, contract after the last;
the database is shared). The hosts get the release's wheel through the engine and install it
themselves (:mod:`.payload`, :mod:`.agent`).

What serves is the hosts': :meth:`FleetTarget.current` is the release *every* host serves
(None while they differ), :meth:`FleetTarget.activate` rolls the whole fleet one host at a time
(drain, switch, check, put back; the deploy's own waves are ``deploy/fleet.py``), which is
what a rollback or an undo asks of a target.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dhash_rollout.environments import Environment, HostSettings, ProxySettings, WaveSettings
from dhash_rollout.releases import DepsMode, Release, ReleaseSource, normalize_version
from dhash_rollout.targets import Activation, ProcessStatus, Progress, TargetStatus
from dhash_rollout.targets.fleet.hosts import ProxiedHosts
from dhash_rollout.targets.fleet.payload import DhashReleases
from dhash_rollout.targets.fleet.status import HostStatus, fleet_status
from dhash_rollout.targets.local import LocalTarget
from dhash_service.errors import CheckFailed, ConfigError, NotFound


def _silent(_message: str) -> None:
    return None


class FleetTarget:
    def __init__(self, env: Environment, *, deps: DepsMode | None = None) -> None:
        hosts, proxy = env.settings.hosts, env.settings.proxy
        if not hosts or proxy is None:
            raise ConfigError(f"environment {env.name}: a fleet needs its hosts and its proxy")
        self.env = env
        self.host_list: tuple[HostSettings, ...] = hosts
        self.proxy: ProxySettings = proxy
        self.waves: WaveSettings = env.settings.waves or WaveSettings()
        self.controller = LocalTarget(env, deps=deps)  # the controller's copy of releases
        self.known_hosts = env.root / "fleet" / "known_hosts"
        self.payload = DhashReleases(env)
        self.hosts = ProxiedHosts(
            {h.name: h for h in hosts}, proxy, self.payload, known_hosts=self.known_hosts,
            parallel=self.waves.parallel, ready_timeout=env.settings.ready_timeout_seconds,
        )  # fmt: skip

    # --- releases -----------------------------------------------------------------------------
    def install(
        self,
        source: ReleaseSource,
        *,
        version: str | None = None,
        progress: Progress | None = None,
        settings: Mapping[str, str] | None = None,
        only: Sequence[str] | None = None,
    ) -> Release:
        """The controller's copy first (it builds the wheel once), then that same wheel on
        every host (or the ``only`` ones: a canary's host), in parallel; refused naming each
        host that could not install it."""
        say = progress or _silent
        chosen = [h for h in self.host_list if only is None or h.name in only]

        def on_hosts(wheel: Path) -> dict[str, str | None]:
            say(f"installing {wheel.name} on {len(chosen)} hosts")
            return self.payload.install(
                chosen, wheel, known_hosts=self.known_hosts, settings=settings,
                parallel=len(chosen),
            )  # fmt: skip

        if source.kind == "wheel":  # the hosts need not wait for the controller's copy
            with ThreadPoolExecutor(max_workers=1) as pool:
                hosts = pool.submit(on_hosts, Path(source.location))
                release = self.controller.install(source, version=version, progress=progress)
                answers = hosts.result()
        else:  # the controller builds the wheel once; the hosts get that one
            release = self.controller.install(source, version=version, progress=progress)
            answers = on_hosts(release.path / release.wheel)
        failed = {name: why for name, why in answers.items() if why}
        if failed:
            named = "; ".join(f"{h}: {why.strip().splitlines()[-1]}" for h, why in failed.items())
            raise CheckFailed(f"release {release.version} did not install on {named}")
        return release

    def release(self, version: str) -> Release | None:
        return self.controller.release(version)

    def releases(self) -> list[Release]:
        return self.controller.releases()

    def host_statuses(self) -> list[HostStatus]:
        return fleet_status(self.host_list, self.proxy, known_hosts=self.known_hosts)

    def served(self) -> dict[str, str | None]:
        """The release each host's ``current`` names (None: nothing, or unreachable)."""
        return {s.name: s.release for s in self.host_statuses()}

    def _common(self, which: str) -> Release | None:
        found = {getattr(s, which) for s in self.host_statuses()}
        if len(found) != 1 or None in found:
            return None
        version = next(iter(found))
        assert version is not None
        return self.release(version)

    def current(self) -> Release | None:
        """The release every host serves; None while the hosts differ."""
        return self._common("release")

    def previous(self) -> Release | None:
        return self._common("previous")

    # --- what serves --------------------------------------------------------------------------
    def roll(
        self, names: Sequence[str], version: str, say: Progress, back: Collection[str] = ()
    ) -> dict[str, str]:
        """Switch ``names`` to ``version`` one at a time, each drained first and put back
        after its check; a host that fails stays drained. Each failed host and why. The
        hosts in ``back`` are switched back (to a release they served: the longer wait)."""
        failed: dict[str, str] = {}
        for name in names:
            why = self.hosts.drain(name)
            if not why:
                why = self.hosts.switch([name], version, back=name in back)[name]
            if not why:
                why = self.hosts.check([name])[name] or self.hosts.ready(name)
            say(f"{name}: {'on ' + version if not why else 'FAILED: ' + why}")
            if why:
                failed[name] = why
        return failed

    def activate(
        self, version: str, *, progress: Progress | None = None, back: Collection[str] = ()
    ) -> Activation:
        """Every host on ``version``; ``back``: the hosts going back to a release they served
        (a rollback's, decided by ``rollback.fleet_plan.hosts_going_back``)."""
        version = normalize_version(version)
        if self.release(version) is None:
            raise NotFound(f"release {version} is not installed for {self.env.name}")
        before = self.served()
        todo = [n for n, v in before.items() if v != version]
        failed = self.roll(todo, version, progress or _silent, back)
        if failed:
            named = "; ".join(f"{h}: {why}" for h, why in failed.items())
            raise CheckFailed(f"{version} could not be activated on {named}")
        previous = {v for n, v in before.items() if n in todo and v}
        return Activation(
            version=version,
            previous=previous.pop() if len(previous) == 1 else None,
            instance=",".join(todo),
            changed=bool(todo),
        )

    def status(self) -> TargetStatus:
        statuses = self.host_statuses()
        versions = {s.release for s in statuses}
        previous = {s.previous for s in statuses}
        return TargetStatus(
            current=versions.pop() if len(versions) == 1 else None,
            previous=previous.pop() if len(previous) == 1 else None,
            processes=tuple(
                ProcessStatus(
                    s.name, s.release, "RUNNING" if s.proxy_status == "UP" else s.proxy_status
                )
                for s in statuses
            ),
            extra={"hosts": [s.to_dict() for s in statuses]},
        )

    def start(self, *, progress: Progress | None = None) -> Activation:
        """Bring back the hosts out of rotation (after :meth:`stop` or a reboot) on the release
        every host names, each checked and put back; hosts in rotation are left alone. Their
        ``current`` did not move when they stopped, so :meth:`activate` would find nothing to do."""
        statuses = self.host_statuses()
        versions = {s.release for s in statuses}
        version = versions.pop() if len(versions) == 1 else None
        if version is None or self.release(version) is None:
            raise NotFound(f"the hosts of {self.env.name} do not serve one release")
        down = [s.name for s in statuses if s.proxy_status != "UP"]
        failed = self.roll(down, version, progress or _silent, back=down)  # a release they served
        if failed:
            named = "; ".join(f"{h}: {why}" for h, why in failed.items())
            raise CheckFailed(f"{version} could not be started again on {named}")
        return Activation(version=version, previous=None, instance=",".join(down),
                          changed=bool(down))  # fmt: skip

    def stop(self) -> None:
        """Stop serving on every host (each out of the proxy, its slots and supervisord)."""
        for host in self.host_list:
            self.hosts.drain(host.name)
        failed = {
            n: why
            for n, why in self.payload.shutdown(
                self.host_list, known_hosts=self.known_hosts, parallel=len(self.host_list)
            ).items()
            if why
        }
        if failed:
            raise CheckFailed(f"could not stop {', '.join(failed)}: {failed}")

    def deactivate(self) -> None:
        raise CheckFailed(
            f"{self.env.name} is a fleet: a release is taken off its hosts by a rollback to the "
            "previous one, never by leaving them without one"
        )

    def logs(self, lines: int = 100) -> str:
        return (
            f"{self.env.name} is a fleet: each host's service log is "
            f"<root>/shared/logs/dhash-*.log on the host ({', '.join(self.hosts.hosts)})"
        )

    def shutdown(self) -> None:
        self.stop()
