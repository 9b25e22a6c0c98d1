"""The local target: releases in ``<root>/releases``, processes run by supervisord.

Two program slots, ``dhash-blue`` and ``dhash-green``, alternate between releases. A switch
starts the idle slot on the same port (the service binds with SO_REUSEPORT), waits until *that*
process answers ``/ready`` (``/health`` names its pid), moves the ``current`` link atomically,
then stops the old slot with SIGTERM so it drains its requests.

Steady state is one slot configured and running. Every step of :meth:`LocalTarget.activate`
re-reads what is running, so a switch interrupted at any point converges when run again. The
parts: :mod:`.layout` (where files go), :mod:`.supervisor` (process control and the slots'
program files), :mod:`.readiness` (is the new process itself ready), :mod:`.logs`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import replace
from pathlib import Path

from dhash_rollout.environments import (
    Environment,
    api_token,
    provision_api_token,
    service_config_token,
)
from dhash_rollout.releases import (
    DEPS_MODES,
    DepsMode,
    Release,
    ReleaseSource,
    install_release,
    list_releases,
    normalize_version,
    read_release,
    read_release_settings,
    release_path,
)
from dhash_rollout.targets import Activation, ProcessStatus, Progress, TargetStatus
from dhash_rollout.targets.local.layout import LocalLayout
from dhash_rollout.targets.local.listeners import (
    Listener,
    listeners,
    serving_root,
    stop_orphans,
)
from dhash_rollout.targets.local.logs import ProcessLogs
from dhash_rollout.targets.local.readiness import Readiness
from dhash_rollout.targets.local.supervisor import (
    ACTIVE_STATES,
    SLOTS,
    Slot,
    Supervisor,
)
from dhash_rollout.targets.steering import clear_steering, steer_new_connections
from dhash_service.config import Settings
from dhash_service.errors import CheckFailed, ConfigError, NotFound, Unavailable

MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")

__all__ = ["SLOTS", "LocalTarget"]


def _atomic_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` with a rename, so readers never see it missing."""
    tmp = link.with_name(f".{link.name}.{secrets.token_hex(4)}")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _silent(_message: str) -> None:
    return None


class LocalTarget:
    """Releases and supervisord-run processes on this machine, under ``env.root``."""

    def __init__(
        self, env: Environment, *, deps: DepsMode | None = None, bind: str = "127.0.0.1"
    ) -> None:
        self.env = env
        # Where the service listens: loopback here; a fleet host's agent binds every address
        # of the host, so the proxy reaches it (targets/fleet/agent.py).
        self.bind = bind
        self.root = env.root
        chosen = deps or env.settings.release_deps
        if chosen not in DEPS_MODES:
            raise ConfigError(
                f"environment {env.name}: release_deps must be one of {', '.join(DEPS_MODES)}"
            )
        self.deps: DepsMode = chosen
        grace = env.settings.shutdown_grace_seconds
        default_grace = Settings.model_fields["shutdown_grace_seconds"].default
        self.grace = float(default_grace if grace is None else grace)
        self.workers = env.settings.workers
        self.layout = LocalLayout(env.root)
        self.supervisor = Supervisor(self.layout, env.name)
        self.readiness = Readiness(env.port, env.settings.ready_timeout_seconds)
        self.process_logs = ProcessLogs(self.layout, env.name)

    # --- releases -----------------------------------------------------------------------------
    def install(
        self, source: ReleaseSource, *, version: str | None = None, progress: Progress | None = None
    ) -> Release:
        self.layout.ensure()
        return install_release(
            self.root, source, version=version, deps=self.deps, progress=progress
        )

    def release(self, version: str) -> Release | None:
        return read_release(release_path(self.root, version))

    def releases(self) -> list[Release]:
        return list_releases(self.root)

    def _linked(self, name: str) -> Release | None:
        link = self.root / name
        if not link.is_symlink():
            return None
        return read_release(link.resolve())

    def current(self) -> Release | None:
        return self._linked("current")

    def previous(self) -> Release | None:
        return self._linked("previous")

    # --- what the service process runs with ---------------------------------------------------
    def service_environment(self) -> dict[str, str]:
        """The settings the service process runs with (it reads them in its Settings)."""
        values = {
            "DHASH_ENV": self.env.name,
            "DHASH_DATABASE_URL": self.env.database_url,
            "DHASH_DATA_DIR": str(self.layout.shared / "data"),
            "DHASH_LOG_DIR": str(self.layout.log_dir),
            "DHASH_HOST": self.bind,
            "DHASH_PORT": str(self.env.port),
            "DHASH_WORKERS": str(self.workers),
            "DHASH_SHUTDOWN_GRACE_SECONDS": str(self.grace),
        }
        token = api_token(self.env)
        if token and (self.env.api_token or token != service_config_token(self.env)):
            values["DHASH_API_TOKENS"] = token  # else the service reads its own config file
        config_file = self.layout.shared / "config" / "dhash.toml"
        if config_file.exists():
            values["DHASH_CONFIG_FILE"] = str(config_file)
        return values

    def configure_slot(self, slot: str, release: Release, instance: str) -> None:
        """Write ``slot``'s program for ``release`` and have supervisord load it. The release's
        own settings (``settings.json``, ``dhash deploy --release-setting``) apply to it alone;
        the environment's keys are never among them."""
        environment = {**read_release_settings(release), **self.service_environment()}
        self.supervisor.write_program(
            slot,
            release,
            instance,
            environment=environment,
            port=self.env.port,
            workers=self.workers,
            grace=self.grace,
            host=self.bind,
        )
        self.supervisor.sync_programs()

    def wait_ready(self, slot: str, timeout: float | None = None) -> int:
        return self.readiness.wait_ready(self.supervisor, slot, self.process_logs.why, timeout)

    # --- the switch ---------------------------------------------------------------------------
    def activate(self, version: str, *, progress: Progress | None = None) -> Activation:
        say = progress or _silent
        version = normalize_version(version)
        release = self.release(version)
        if release is None:
            raise NotFound(f"release {version} is not installed in {self.root}")
        self.supervisor.ensure()
        if clear_steering(self.bind, self.env.port):
            say(
                f"cleared the connection steering a killed run left on port {self.env.port} "
                "(it sent every new connection to one process)"
            )
        self._refuse_foreign_listeners()
        before = self.current()
        slots = self.supervisor.slots()
        serving = [s for s in slots if s.release == version and s.state == "RUNNING"]
        changed = True
        if serving:
            slot, instance = serving[0].name, serving[0].instance or ""
            say(f"{slot} already runs {version}")
            changed = before is None or before.version != version
        else:
            slot = self.idle_slot(slots, before)
            instance = f"{slot}-{version}-{secrets.token_hex(3)}"
            _token, generated = provision_api_token(self.env)
            if generated:
                say(f"generated the API token of {self.env.name}: {self.env.generated_token_file}")
            say(f"starting {version} in {slot} on port {self.env.port}")
            self.configure_slot(slot, release, instance)
            try:
                self.supervisor.ensure_started(slot)
            except Unavailable as exc:
                self._abandon(slot, say)
                why = self.process_logs.why(slot)
                raise CheckFailed(f"{slot} did not start: {exc}; {why}") from exc
        try:
            self.wait_ready(slot)
        except CheckFailed:
            self._abandon(slot, say)
            raise
        say(f"{slot} ({version}) is ready")
        if before is not None and before.version != version:
            _atomic_symlink(self.root / "previous", f"releases/{before.version}")
        _atomic_symlink(self.root / "current", f"releases/{version}")
        now = self.supervisor.slots()
        others = [o for o in now if o.name != slot and (o.state != "ABSENT" or o.release)]
        serving_others = [o for o in others if o.state == "RUNNING"]
        new_pid = next(s.pid for s in now if s.name == slot)
        steer = (
            steer_new_connections(
                self.bind, self.env.port, lambda: self.readiness.all_reach(new_pid)
            )
            if serving_others and new_pid
            else contextlib.nullcontext(False)
        )
        with steer as steering:
            if serving_others:
                say(f"new connections go to {slot} only" if steering else "no steering here")
            for other in others:
                self.supervisor.retire(other.name, self.grace, say)
        self._retire_orphans(say)
        return Activation(
            version=version,
            previous=before.version if before and before.version != version else None,
            instance=instance,
            changed=changed,
            steered=bool(steering),
        )

    # --- a second release beside the current one (the canary) ------------------------------
    def start_beside(self, version: str, *, progress: Progress | None = None) -> tuple[str, int]:
        """Start ``version`` in the idle slot on the same port, beside the current release,
        and wait until it answers ``/ready`` itself; ``current`` does not move. The caller
        decides its share of connections (docs/canary.md). Returns its slot and pid."""
        say = progress or _silent
        version = normalize_version(version)
        release = self.release(version)
        if release is None:
            raise NotFound(f"release {version} is not installed in {self.root}")
        current = self.current()
        if current is None:
            raise NotFound(f"no current release in {self.root}: a canary runs beside one")
        if current.version == version:
            raise ConfigError(f"{version} is already the stable release of {self.env.name}")
        self.supervisor.ensure()
        slots = self.supervisor.slots()
        mine = [s for s in slots if s.release == version and s.state == "RUNNING"]
        if mine:
            slot = mine[0].name
            say(f"{slot} already runs {version}")
        else:
            busy = [s for s in slots if s.state in ACTIVE_STATES and s.release != current.version]
            if busy:
                raise CheckFailed(
                    f"{busy[0].name} runs {busy[0].release}: one release beside stable at a time"
                )
            slot = self.idle_slot(slots, current)
            instance = f"{slot}-{version}-{secrets.token_hex(3)}"
            say(f"starting {version} in {slot} beside {current.version} on port {self.env.port}")
            self.configure_slot(slot, release, instance)
            try:
                self.supervisor.ensure_started(slot)
            except Unavailable as exc:
                self._abandon(slot, say)
                raise CheckFailed(
                    f"{slot} did not start: {exc}; {self.process_logs.why(slot)}"
                ) from exc
        try:
            pid = self.wait_ready(slot)
        except CheckFailed:
            self._abandon(slot, say)
            raise
        slot_pid = self.supervisor.slot(slot).pid
        return slot, slot_pid or pid

    def retire_slot(self, slot: str, *, progress: Progress | None = None) -> None:
        """Stop one slot (it drains on SIGTERM) and drop its program; the other keeps serving."""
        self.supervisor.retire(slot, self.grace, progress or _silent)

    # --- who really listens on the port -------------------------------------------------------
    def listeners(self) -> list[Listener]:
        """Every process listening on the environment's port, per the kernel (see
        :mod:`.listeners`): the slots', orphans of a supervisord that died, foreign ones."""
        slots = self.supervisor.slots()
        return listeners(
            self.env.port,
            slots={s.name: s.pid for s in slots if s.pid},
            slot_releases={s.name: s.release for s in slots},
            releases_dir=self.root / "releases",
        )

    def _refuse_foreign_listeners(self) -> None:
        foreign = [item for item in self.listeners() if item.kind == "foreign"]
        if foreign:
            who = "; ".join(item.describe() for item in foreign)
            raise CheckFailed(
                f"port {self.env.port} of {self.env.name} has a listener this environment does "
                f"not run: {who}. With SO_REUSEPORT it takes a share of the traffic; stop it "
                f"and run again (nothing was changed; `dhash release status --env "
                f"{self.env.name}` shows who listens)"
            )

    def _retire_orphans(self, say: Progress) -> None:
        """Stop the services a dead supervisord left running, once a supervised slot serves:
        they drain like a retiring slot, so no request fails."""
        orphans = [item for item in self.listeners() if item.kind == "orphan"]
        if not orphans:
            return
        releases = ", ".join(sorted({o.release or "?" for o in orphans}))
        say(f"stopping the orphaned service a dead supervisord left on the port ({releases})")
        stopped = stop_orphans(orphans, self.grace)
        say(f"stopped pid {', '.join(map(str, stopped))}")

    @staticmethod
    def idle_slot(slots: list[Slot], current: Release | None) -> str:
        running = [s for s in slots if s.state in ACTIVE_STATES]
        idle = [s for s in slots if s not in running]
        if idle:
            return idle[0].name
        # Both run (a switch died half-way) and neither runs the wanted release: keep the one
        # serving the current release, reuse the other.
        keep = next((s for s in running if current and s.release == current.version), running[0])
        return next(s.name for s in slots if s.name != keep.name)

    def _abandon(self, slot: str, say: Progress) -> None:
        say(f"abandoning {slot}: the old release keeps serving")
        with contextlib.suppress(Unavailable, OSError):
            self.supervisor.retire(slot, self.grace, say)

    # --- stop, start, status, logs ------------------------------------------------------------
    def stop(self) -> None:
        self.supervisor.stop_all()

    def deactivate(self) -> None:
        """Retire every slot and remove the ``current`` link: nothing is deployed afterwards."""
        if self.supervisor.running():
            for slot in self.supervisor.slots():
                if slot.state != "ABSENT" or slot.release:
                    self.supervisor.retire(slot.name, self.grace, _silent)
        else:
            for name in SLOTS:
                self.layout.program_file(name).unlink(missing_ok=True)
        (self.root / "current").unlink(missing_ok=True)

    def start(self, *, progress: Progress | None = None) -> Activation:
        """Bring the current release up again (after :meth:`stop` or a reboot)."""
        current = self.current()
        if current is None:
            raise NotFound(f"no current release in {self.root}: deploy one first")
        self.supervisor.ensure()  # gone after `release stop --all` or a reboot
        for slot in self.supervisor.slots():
            if slot.release == current.version and slot.state != "RUNNING":
                # A slot already down is only cleared: "stopping" it would read as an outage.
                down = slot.state in ("STOPPED", "EXITED", "FATAL", "ABSENT")
                say = _silent if down else (progress or _silent)
                self.supervisor.retire(slot.name, self.grace, say)
        return self.activate(current.version, progress=progress)

    def shutdown(self) -> None:
        self.supervisor.shutdown()

    @staticmethod
    def tcp_migrate_req() -> bool | None:
        """Whether the kernel hands a closing listener's queued connections to its peers."""
        try:
            return MIGRATE_REQ.read_text().strip() == "1"
        except OSError:
            return None

    def status(self) -> TargetStatus:
        current, previous = self.current(), self.previous()
        slots = self.supervisor.slots()
        heard = self.listeners()
        strays: dict[int, Listener] = {}  # one entry per stray service, not per worker
        for item in heard:
            if item.kind in ("orphan", "foreign"):
                key = serving_root(item.pid) if item.pid else -item.inode
                strays.setdefault(key, replace(item, pid=key if item.pid else None))
        return TargetStatus(
            current=current.version if current else None,
            previous=previous.version if previous else None,
            processes=(
                *(ProcessStatus(s.name, s.release, s.state, s.pid) for s in slots),
                *(
                    ProcessStatus(item.kind, item.release, item.kind.upper(), item.pid)
                    for item in strays.values()
                ),
            ),
            extra={
                "listeners": [item.to_dict() for item in heard],
                "supervisord": self.supervisor.running(),
                "socket": str(self.layout.socket_path),
                "port": self.env.port,
                "tcp_migrate_req": self.tcp_migrate_req(),
            },
        )

    def logs(self, lines: int = 100) -> str:
        return self.process_logs.render(self.supervisor.slots(), lines)
