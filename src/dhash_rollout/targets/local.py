"""The local target: releases in ``<root>/releases``, processes run by supervisord.

One supervisord per environment root, started on first use (unix socket only, no TCP) and driven
over its XML-RPC API. Two program slots, ``dhash-blue`` and ``dhash-green``, alternate between
releases. A switch starts the idle slot on the same port (the service binds with SO_REUSEPORT),
waits until *that* process answers ``/ready`` (``/health`` names its pid), moves the
``current`` link atomically, then stops the old slot with SIGTERM so it drains its requests.

Steady state is one slot configured and running. Every step of :meth:`LocalTarget.activate`
re-reads what is running, so a switch interrupted at any point converges when run again.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    release_path,
)
from dhash_rollout.targets import Activation, ProcessStatus, Progress, TargetStatus
from dhash_rollout.targets.steering import steer_new_connections
from dhash_service.config import Settings
from dhash_service.errors import CheckFailed, ConfigError, NotFound, Unavailable

SLOTS = ("dhash-blue", "dhash-green")
MIGRATE_REQ = Path("/proc/sys/net/ipv4/tcp_migrate_req")
_RELEASE_LINE = re.compile(r"^; release = (\S+)$", re.M)
_INSTANCE_LINE = re.compile(r"^; instance = (\S+)$", re.M)
_SUN_PATH_MAX = 100  # AF_UNIX paths are limited to 108 bytes; keep a margin
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b.*")
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")


@dataclass(frozen=True)
class Slot:
    name: str
    release: str | None  # from the slot's program file; None when the slot is not configured
    instance: str | None
    state: str  # supervisord state name, or ABSENT when supervisord does not know the program
    pid: int | None


def _atomic_symlink(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` with a rename, so readers never see it missing."""
    tmp = link.with_name(f".{link.name}.{secrets.token_hex(4)}")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _descends_from(pid: int, ancestor: int) -> bool:
    """``pid`` is ``ancestor`` or one of its children (uvicorn workers), per ``/proc``."""
    for _ in range(4):
        if pid == ancestor:
            return True
        try:
            status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
        except OSError:
            return False
        match = re.search(r"^PPid:\s+(\d+)", status, re.M)
        if not match or int(match.group(1)) <= 1:
            return False
        pid = int(match.group(1))
    return False


def _quote(value: str) -> str:
    """A value for supervisord's ``environment=`` (quoted; ``%`` escaped for its interpolation)."""
    return '"' + value.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"') + '"'


class LocalTarget:
    """Releases and supervisord-run processes on this machine, under ``env.root``."""

    def __init__(self, env: Environment, *, deps: DepsMode | None = None) -> None:
        self.env = env
        self.root = env.root
        chosen = deps or env.settings.release_deps
        if chosen not in DEPS_MODES:
            raise ConfigError(
                f"environment {env.name}: release_deps must be one of {', '.join(DEPS_MODES)}"
            )
        self.deps: DepsMode = chosen
        defaults = Settings.model_fields
        grace = env.settings.shutdown_grace_seconds
        self.grace = float(defaults["shutdown_grace_seconds"].default if grace is None else grace)
        self.workers = env.settings.workers
        self.ready_timeout = env.settings.ready_timeout_seconds

    # --- layout -------------------------------------------------------------------------------
    @property
    def shared(self) -> Path:
        return self.root / "shared"

    @property
    def log_dir(self) -> Path:
        return self.shared / "logs"

    @property
    def supervisor_dir(self) -> Path:
        return self.root / "supervisor"

    @property
    def programs_dir(self) -> Path:
        return self.supervisor_dir / "programs"

    @property
    def conf_path(self) -> Path:
        return self.supervisor_dir / "supervisord.conf"

    @property
    def pidfile(self) -> Path:
        return self.supervisor_dir / "supervisord.pid"

    @property
    def socket_path(self) -> Path:
        """``<root>/supervisor/supervisor.sock``, or a short path derived from it when too long."""
        preferred = self.supervisor_dir / "supervisor.sock"
        if len(str(preferred).encode()) <= _SUN_PATH_MAX:
            return preferred
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        base = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir())
        return base / f"dhash-supervisor-{digest}.sock"

    def _program_file(self, slot: str) -> Path:
        return self.programs_dir / f"{slot}.conf"

    def _ensure_layout(self) -> None:
        for path in (self.shared / "config", self.shared / "data", self.log_dir):
            path.mkdir(parents=True, exist_ok=True)
        self.programs_dir.mkdir(parents=True, exist_ok=True)

    # --- releases -----------------------------------------------------------------------------
    def install(
        self, source: ReleaseSource, *, version: str | None = None, progress: Progress | None = None
    ) -> Release:
        self._ensure_layout()
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

    # --- supervisord --------------------------------------------------------------------------
    def _proxy(self) -> Any:
        from supervisor.xmlrpc import SupervisorTransport

        transport = SupervisorTransport(None, None, serverurl=f"unix://{self.socket_path}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    @contextlib.contextmanager
    def _rpc(self) -> Iterator[Any]:
        proxy = self._proxy()
        try:
            yield proxy.supervisor
        except xmlrpc.client.Fault as fault:
            raise Unavailable(f"supervisord refused: {fault.faultString}") from fault
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(
                f"supervisord of {self.env.name} does not answer on {self.socket_path} "
                f"({exc.__class__.__name__}): `dhash release start --env {self.env.name}` "
                "starts it again"
            ) from exc
        finally:
            proxy("transport").close()

    def supervisord_running(self) -> bool:
        try:
            with self._rpc() as rpc:
                return bool(rpc.getState()["statename"] == "RUNNING")
        except (OSError, http.client.HTTPException, Unavailable):
            return False

    def _write_supervisord_conf(self) -> None:
        self.supervisor_dir.mkdir(parents=True, exist_ok=True)
        text = "\n".join(
            [
                "; written by dhash: the process manager of this environment",
                "[unix_http_server]",
                f"file={self.socket_path}",
                "chmod=0700",
                "",
                "[supervisord]",
                f"logfile={self.log_dir / 'supervisord.log'}",
                "logfile_maxbytes=10MB",
                "logfile_backups=3",
                f"pidfile={self.pidfile}",
                f"childlogdir={self.log_dir}",
                f"directory={self.shared}",
                "",
                "[rpcinterface:supervisor]",
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                "",
                "[supervisorctl]",
                f"serverurl=unix://{self.socket_path}",
                "",
                "[include]",
                f"files = {self.programs_dir}/*.conf",
                "",
            ]
        )
        self.conf_path.write_text(text, encoding="utf-8")

    def _supervisord_binary(self) -> str:
        beside = Path(sys.executable).parent / "supervisord"
        if beside.exists():
            return str(beside)
        found = shutil.which("supervisord")
        if not found:
            raise ConfigError("supervisord is not installed (the `supervisor` package)")
        return found

    def ensure_supervisord(self, timeout: float = 20.0) -> None:
        """Start this root's supervisord unless it already answers on its socket."""
        if self.supervisord_running():
            return
        self._ensure_layout()
        self._write_supervisord_conf()
        if self.socket_path.exists():
            self.socket_path.unlink()  # left by a supervisord that died; nobody answers on it
        env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
        done = subprocess.run(
            [self._supervisord_binary(), "-c", str(self.conf_path)],
            env=env,
            cwd=self.shared,
            capture_output=True,
            text=True,
            check=False,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.supervisord_running():
                return
            time.sleep(0.1)
        raise Unavailable(
            f"supervisord for {self.env.name} did not come up (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-500:]}"
        )

    def _slots(self) -> list[Slot]:
        infos: dict[str, dict[str, Any]] = {}
        if self.supervisord_running():
            with self._rpc() as rpc:
                infos = {i["name"]: i for i in rpc.getAllProcessInfo()}
        slots = []
        for name in SLOTS:
            text = ""
            with contextlib.suppress(OSError):
                text = self._program_file(name).read_text(encoding="utf-8")
            release = _RELEASE_LINE.search(text)
            instance = _INSTANCE_LINE.search(text)
            info = infos.get(name)
            slots.append(
                Slot(
                    name=name,
                    release=release.group(1) if release else None,
                    instance=instance.group(1) if instance else None,
                    state=str(info["statename"]) if info else "ABSENT",
                    pid=int(info["pid"]) if info and info.get("pid") else None,
                )
            )
        return slots

    def service_environment(self) -> dict[str, str]:
        """The settings the service process runs with (it reads them in its Settings)."""
        values = {
            "DHASH_ENV": self.env.name,
            "DHASH_DATABASE_URL": self.env.database_url,
            "DHASH_DATA_DIR": str(self.shared / "data"),
            "DHASH_LOG_DIR": str(self.log_dir),
            "DHASH_HOST": "127.0.0.1",
            "DHASH_PORT": str(self.env.port),
            "DHASH_WORKERS": str(self.workers),
            "DHASH_SHUTDOWN_GRACE_SECONDS": str(self.grace),
        }
        token = api_token(self.env)
        if token and (self.env.api_token or token != service_config_token(self.env)):
            values["DHASH_API_TOKENS"] = token  # else the service reads its own config file
        config_file = self.shared / "config" / "dhash.toml"
        if config_file.exists():
            values["DHASH_CONFIG_FILE"] = str(config_file)
        return values

    def _write_program(self, slot: str, release: Release, instance: str) -> None:
        env = ",".join(f"{k}={_quote(v)}" for k, v in self.service_environment().items())
        command = (
            f"{release.dhash} serve --host 127.0.0.1 --port {self.env.port} "
            f"--workers {self.workers}"
        )
        text = "\n".join(
            [
                f"; release = {release.version}",
                f"; instance = {instance}",
                f"[program:{slot}]",
                f"command={command}",
                f"directory={self.shared}",
                f"environment={env}",
                "autostart=true",
                "autorestart=unexpected",
                "startsecs=1",
                "startretries=2",
                "stopsignal=TERM",
                f"stopwaitsecs={int(self.grace) + 10}",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                f"stdout_logfile={self.log_dir / f'{slot}.log'}",
                "stdout_logfile_maxbytes=10MB",
                "stdout_logfile_backups=3",
                "",
            ]
        )
        path = self._program_file(slot)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the API token
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)

    def _sync_programs(self) -> None:
        """Make supervisord's loaded programs match the program files on disk."""
        with self._rpc() as rpc:
            added, changed, removed = rpc.reloadConfig()[0]
            for name in removed:
                with contextlib.suppress(xmlrpc.client.Fault):
                    rpc.stopProcess(name, True)
                rpc.removeProcessGroup(name)
            for name in changed:
                with contextlib.suppress(xmlrpc.client.Fault):
                    rpc.stopProcess(name, True)
                rpc.removeProcessGroup(name)
                rpc.addProcessGroup(name)
            for name in added:
                rpc.addProcessGroup(name)

    def _retire(self, slot: str, say: Progress) -> None:
        """Stop a slot gracefully (SIGTERM, it drains) and drop its program."""
        say(f"stopping {slot} (SIGTERM, up to {int(self.grace) + 10} s to drain)")
        self._program_file(slot).unlink(missing_ok=True)
        with self._rpc() as rpc, contextlib.suppress(xmlrpc.client.Fault):  # NOT_RUNNING: fine
            rpc.stopProcess(slot, True)
        # A stop begun by an interrupted run may still be in progress: wait it out.
        deadline = time.monotonic() + self.grace + 20
        while time.monotonic() < deadline:
            state = next(s for s in self._slots() if s.name == slot).state
            if state not in ("STOPPING", "RUNNING", "STARTING", "BACKOFF"):
                break
            time.sleep(0.1)
        self._sync_programs()

    # --- readiness ----------------------------------------------------------------------------
    def identify(self, timeout: float = 2.0) -> tuple[int, bool] | None:
        """Which process answers, and whether it is ready: ``/health`` (its pid) then ``/ready``
        on ONE kept-alive connection, so both answers come from the same process even though
        SO_REUSEPORT spreads new connections over every process bound to the port."""
        conn = http.client.HTTPConnection("127.0.0.1", self.env.port, timeout=timeout)
        try:
            conn.request("GET", "/health")
            first = conn.getresponse()
            body = first.read()
            sock = conn.sock
            if first.status != 200 or first.will_close or sock is None:
                return None
            pid = json.loads(body).get("pid")
            conn.request("GET", "/ready")
            second = conn.getresponse()
            second.read()
            if conn.sock is not sock or not isinstance(pid, int):
                return None  # reconnected: the answer may come from another process
            return pid, second.status == 200
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            return None
        finally:
            conn.close()

    def wait_ready(self, slot: str, timeout: float | None = None) -> int:
        """Poll until the process of ``slot`` itself answers ``/ready``; returns its pid.

        Fails fast when the process dies (a new pid means supervisord restarted it)."""
        limit = timeout or self.ready_timeout
        deadline = time.monotonic() + limit
        first_pid: int | None = None
        while time.monotonic() < deadline:
            current = next(s for s in self._slots() if s.name == slot)
            first_pid = first_pid or current.pid
            restarted = current.pid is not None and current.pid != first_pid
            if restarted or current.state in ("FATAL", "EXITED", "STOPPED", "BACKOFF", "ABSENT"):
                what = "restarted after exiting" if restarted else current.state
                raise CheckFailed(f"{slot} ({current.release}) {what}: {self._why(slot)}")
            if current.pid:
                # New connections land on either process; a few tries reach the new one.
                for _ in range(8):
                    seen = self.identify()
                    if seen and seen[1] and _descends_from(seen[0], current.pid):
                        return seen[0]
            time.sleep(0.2)
        raise CheckFailed(f"{slot} did not become ready within {limit:.0f} s: {self._why(slot)}")

    # --- the switch ---------------------------------------------------------------------------
    def activate(self, version: str, *, progress: Progress | None = None) -> Activation:
        say = progress or (lambda _m: None)
        version = normalize_version(version)
        release = self.release(version)
        if release is None:
            raise NotFound(f"release {version} is not installed in {self.root}")
        self.ensure_supervisord()
        before = self.current()
        slots = self._slots()
        serving = [s for s in slots if s.release == version and s.state == "RUNNING"]
        changed = True
        if serving:
            slot, instance = serving[0].name, serving[0].instance or ""
            say(f"{slot} already runs {version}")
            changed = before is None or before.version != version
        else:
            slot = self._idle_slot(slots, before)
            instance = f"{slot}-{version}-{secrets.token_hex(3)}"
            _token, generated = provision_api_token(self.env)
            if generated:
                say(f"generated the API token of {self.env.name}: {self.env.generated_token_file}")
            say(f"starting {version} in {slot} on port {self.env.port}")
            self._write_program(slot, release, instance)
            self._sync_programs()
            try:
                self._ensure_started(slot)
            except Unavailable as exc:
                self._abandon(slot, say)
                raise CheckFailed(f"{slot} did not start: {exc}; {self._why(slot)}") from exc
        try:
            self.wait_ready(slot)
        except CheckFailed:
            self._abandon(slot, say)
            raise
        say(f"{slot} ({version}) is ready")
        if before is not None and before.version != version:
            _atomic_symlink(self.root / "previous", f"releases/{before.version}")
        _atomic_symlink(self.root / "current", f"releases/{version}")
        others = [o for o in self._slots() if o.name != slot and (o.state != "ABSENT" or o.release)]
        serving_others = [o for o in others if o.state == "RUNNING"]
        new_pid = next(s.pid for s in self._slots() if s.name == slot)
        steer = (
            steer_new_connections("127.0.0.1", self.env.port, lambda: self._all_reach(new_pid))
            if serving_others and new_pid
            else contextlib.nullcontext(False)
        )
        with steer as steering:
            if serving_others:
                say(f"new connections go to {slot} only" if steering else "no steering here")
            for other in others:
                self._retire(other.name, say)
        steered = bool(steering)
        return Activation(
            version=version,
            previous=before.version if before and before.version != version else None,
            instance=instance,
            changed=changed,
            steered=steered,
        )

    def _ensure_started(self, slot: str) -> None:
        """Start ``slot`` unless supervisord already does (autostart on add, or a re-run)."""
        state = next(s for s in self._slots() if s.name == slot).state
        if state in ("RUNNING", "STARTING", "BACKOFF"):
            return
        with self._rpc() as rpc:
            try:
                rpc.startProcess(slot, False)
            except xmlrpc.client.Fault as fault:
                if "ALREADY_STARTED" not in fault.faultString:
                    raise

    def _all_reach(self, pid: int | None, probes: int = 4) -> bool:
        """Whether fresh connections all reach the process ``pid`` (or its workers)."""
        if pid is None:
            return False
        for _ in range(probes):
            seen = self.identify()
            if seen is None or not _descends_from(seen[0], pid):
                return False
        return True

    def _idle_slot(self, slots: list[Slot], current: Release | None) -> str:
        running = [s for s in slots if s.state in ("RUNNING", "STARTING", "BACKOFF")]
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
            self._retire(slot, say)

    # --- stop, status, logs -------------------------------------------------------------------
    def stop(self) -> None:
        if not self.supervisord_running():
            return
        with self._rpc() as rpc:
            for slot in self._slots():
                if slot.state in ("RUNNING", "STARTING", "BACKOFF"):
                    rpc.stopProcess(slot.name, True)

    def deactivate(self) -> None:
        """Retire every slot and remove the ``current`` link: nothing is deployed afterwards."""
        if self.supervisord_running():
            for slot in self._slots():
                if slot.state != "ABSENT" or slot.release:
                    self._retire(slot.name, lambda _m: None)
        else:
            for name in SLOTS:
                self._program_file(name).unlink(missing_ok=True)
        (self.root / "current").unlink(missing_ok=True)

    def start(self, *, progress: Progress | None = None) -> Activation:
        """Bring the current release up again (after :meth:`stop` or a reboot)."""
        current = self.current()
        if current is None:
            raise NotFound(f"no current release in {self.root}: deploy one first")
        self.ensure_supervisord()  # gone after `release stop --all` or a reboot
        for slot in self._slots():
            if slot.release == current.version and slot.state != "RUNNING":
                # A slot already down is only cleared: "stopping" it would read as an outage.
                down = slot.state in ("STOPPED", "EXITED", "FATAL", "ABSENT")
                self._retire(
                    slot.name, (lambda _m: None) if down else (progress or (lambda _m: None))
                )
        return self.activate(current.version, progress=progress)

    def shutdown(self) -> None:
        if not self.supervisord_running():
            return
        self.stop()
        pid = None
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.pidfile.read_text().strip())
        with (
            contextlib.suppress(OSError, http.client.HTTPException, Unavailable),
            self._rpc() as rpc,
        ):
            rpc.shutdown()
        deadline = time.monotonic() + 15
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def tcp_migrate_req(self) -> bool | None:
        """Whether the kernel hands a closing listener's queued connections to its peers."""
        try:
            return MIGRATE_REQ.read_text().strip() == "1"
        except OSError:
            return None

    def status(self) -> TargetStatus:
        current, previous = self.current(), self.previous()
        slots = self._slots()
        return TargetStatus(
            current=current.version if current else None,
            previous=previous.version if previous else None,
            processes=tuple(ProcessStatus(s.name, s.release, s.state, s.pid) for s in slots),
            extra={
                "supervisord": self.supervisord_running(),
                "socket": str(self.socket_path),
                "port": self.env.port,
                "tcp_migrate_req": self.tcp_migrate_req(),
            },
        )

    def _tail(self, slot: str, lines: int) -> str:
        path = self.log_dir / f"{slot}.log"
        try:
            with path.open("rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - 64 * 1024))
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _why(self, slot: str) -> str:
        """One line for the operator: the process's last exception (or last output line), and
        where its whole output is; the raw tail (a child's traceback) stays in that file."""
        lines = [line.strip() for line in self._tail(slot, 40).splitlines() if line.strip()]
        found = [line for line in lines if _EXCEPTION_LINE.fullmatch(line)]
        last = (found or lines or ["no output"])[-1]
        if len(last) > 300:
            last = last[:297] + "..."
        where = self.log_dir / f"{slot}.log"
        return f"{last} (its output: {where}; dhash release logs --env {self.env.name})"

    def logs(self, lines: int = 100) -> str:
        parts = []
        for slot in self._slots():
            tail = self._tail(slot.name, lines)
            if tail:
                parts.append(f"==> {slot.name} ({slot.release or '-'}, {slot.state}) <==\n{tail}")
        return "\n".join(parts)
