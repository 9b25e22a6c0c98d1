"""supervisord as the local target's process manager: one per environment root, unix socket
only, driven over XML-RPC; two program slots (``dhash-blue``, ``dhash-green``) whose program
files name the release and instance they run."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dhash_rollout.releases import Release
from dhash_rollout.targets.local.layout import LocalLayout
from dhash_service.errors import ConfigError, Unavailable

SLOTS = ("dhash-blue", "dhash-green")
ACTIVE_STATES = ("RUNNING", "STARTING", "BACKOFF")
_RELEASE_LINE = re.compile(r"^; release = (\S+)$", re.M)
_INSTANCE_LINE = re.compile(r"^; instance = (\S+)$", re.M)
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME")

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Slot:
    name: str
    release: str | None  # from the slot's program file; None when the slot is not configured
    instance: str | None
    state: str  # supervisord state name, or ABSENT when supervisord does not know the program
    pid: int | None


def _quote(value: str) -> str:
    """A value for supervisord's ``environment=`` (quoted; ``%`` escaped for its interpolation)."""
    return '"' + value.replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"') + '"'


class Supervisor:
    def __init__(self, layout: LocalLayout, env_name: str) -> None:
        self.layout = layout
        self.env_name = env_name

    # --- the daemon ---------------------------------------------------------------------------
    def _proxy(self) -> Any:
        from supervisor.xmlrpc import SupervisorTransport

        url = f"unix://{self.layout.socket_path}"
        transport = SupervisorTransport(None, None, serverurl=url)
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    @contextlib.contextmanager
    def rpc(self) -> Iterator[Any]:
        proxy = self._proxy()
        try:
            yield proxy.supervisor
        except xmlrpc.client.Fault as fault:
            raise Unavailable(f"supervisord refused: {fault.faultString}") from fault
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(
                f"supervisord of {self.env_name} does not answer on {self.layout.socket_path} "
                f"({exc.__class__.__name__}): `dhash release start --env {self.env_name}` "
                "starts it again"
            ) from exc
        finally:
            proxy("transport").close()

    def running(self) -> bool:
        try:
            with self.rpc() as rpc:
                return bool(rpc.getState()["statename"] == "RUNNING")
        except (OSError, http.client.HTTPException, Unavailable):
            return False

    def _write_conf(self) -> None:
        layout = self.layout
        layout.supervisor_dir.mkdir(parents=True, exist_ok=True)
        text = "\n".join(
            [
                "; written by dhash: the process manager of this environment",
                "[unix_http_server]",
                f"file={layout.socket_path}",
                "chmod=0700",
                "",
                "[supervisord]",
                f"logfile={layout.log_dir / 'supervisord.log'}",
                "logfile_maxbytes=10MB",
                "logfile_backups=3",
                f"pidfile={layout.pidfile}",
                f"childlogdir={layout.log_dir}",
                f"directory={layout.shared}",
                "",
                "[rpcinterface:supervisor]",
                "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
                "",
                "[supervisorctl]",
                f"serverurl=unix://{layout.socket_path}",
                "",
                "[include]",
                f"files = {layout.programs_dir}/*.conf",
                "",
            ]
        )
        layout.conf_path.write_text(text, encoding="utf-8")

    @staticmethod
    def _binary() -> str:
        beside = Path(sys.executable).parent / "supervisord"
        if beside.exists():
            return str(beside)
        found = shutil.which("supervisord")
        if not found:
            raise ConfigError("supervisord is not installed (the `supervisor` package)")
        return found

    def ensure(self, timeout: float = 20.0) -> None:
        """Start this root's supervisord unless it already answers on its socket."""
        if self.running():
            return
        layout = self.layout
        layout.ensure()
        self._write_conf()
        if layout.socket_path.exists():
            layout.socket_path.unlink()  # left by a supervisord that died; nobody answers on it
        env = {k: v for k, v in os.environ.items() if k in _KEPT_ENV}
        done = subprocess.run(
            [self._binary(), "-c", str(layout.conf_path)],
            env=env,
            cwd=layout.shared,
            capture_output=True,
            text=True,
            check=False,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.running():
                return
            time.sleep(0.1)
        raise Unavailable(
            f"supervisord for {self.env_name} did not come up (exit {done.returncode}): "
            f"{(done.stderr or done.stdout).strip()[-500:]}"
        )

    def shutdown(self) -> None:
        """Stop every slot, then supervisord itself, and wait for it to exit."""
        if not self.running():
            return
        self.stop_all()
        pid = None
        with contextlib.suppress(OSError, ValueError):
            pid = int(self.layout.pidfile.read_text().strip())
        with (
            contextlib.suppress(OSError, http.client.HTTPException, Unavailable),
            self.rpc() as rpc,
        ):
            rpc.shutdown()
        deadline = time.monotonic() + 15
        while pid and time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    # --- the slots ----------------------------------------------------------------------------
    def slots(self) -> list[Slot]:
        infos: dict[str, dict[str, Any]] = {}
        if self.running():
            with self.rpc() as rpc:
                infos = {i["name"]: i for i in rpc.getAllProcessInfo()}
        slots = []
        for name in SLOTS:
            text = ""
            with contextlib.suppress(OSError):
                text = self.layout.program_file(name).read_text(encoding="utf-8")
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

    def slot(self, name: str) -> Slot:
        return next(s for s in self.slots() if s.name == name)

    def write_program(
        self,
        slot: str,
        release: Release,
        instance: str,
        *,
        environment: Mapping[str, str],
        port: int,
        workers: int,
        grace: float,
        host: str = "127.0.0.1",
    ) -> None:
        env = ",".join(f"{k}={_quote(v)}" for k, v in environment.items())
        command = f"{release.dhash} serve --host {host} --port {port} --workers {workers}"
        text = "\n".join(
            [
                f"; release = {release.version}",
                f"; instance = {instance}",
                f"[program:{slot}]",
                f"command={command}",
                f"directory={self.layout.shared}",
                f"environment={env}",
                "autostart=true",
                "autorestart=unexpected",
                "startsecs=1",
                "startretries=2",
                "stopsignal=TERM",
                f"stopwaitsecs={int(grace) + 10}",
                "stopasgroup=true",
                "killasgroup=true",
                "redirect_stderr=true",
                f"stdout_logfile={self.layout.slot_log(slot)}",
                "stdout_logfile_maxbytes=10MB",
                "stdout_logfile_backups=3",
                "",
            ]
        )
        path = self.layout.program_file(slot)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the API token
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)

    def sync_programs(self) -> None:
        """Make supervisord's loaded programs match the program files on disk."""
        with self.rpc() as rpc:
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

    def ensure_started(self, slot: str) -> None:
        """Start ``slot`` unless supervisord already does (autostart on add, or a re-run)."""
        if self.slot(slot).state in ACTIVE_STATES:
            return
        with self.rpc() as rpc:
            try:
                rpc.startProcess(slot, False)
            except xmlrpc.client.Fault as fault:
                if "ALREADY_STARTED" not in fault.faultString:
                    raise

    def retire(self, slot: str, grace: float, say: Progress) -> None:
        """Stop a slot gracefully (SIGTERM, it drains) and drop its program."""
        say(f"stopping {slot} (SIGTERM, up to {int(grace) + 10} s to drain)")
        self.layout.program_file(slot).unlink(missing_ok=True)
        with self.rpc() as rpc, contextlib.suppress(xmlrpc.client.Fault):  # NOT_RUNNING: fine
            rpc.stopProcess(slot, True)
        # A stop begun by an interrupted run may still be in progress: wait it out.
        deadline = time.monotonic() + grace + 20
        while time.monotonic() < deadline:
            if self.slot(slot).state not in ("STOPPING", *ACTIVE_STATES):
                break
            time.sleep(0.1)
        self.sync_programs()

    def stop_all(self) -> None:
        """Stop every slot and keep it stopped: the program files lose ``autostart``, so a
        supervisord restarted later (a reboot, ``release start``'s ensure) does not bring a
        stopped environment back by itself (issue 12); the next switch writes them again."""
        for name in SLOTS:
            path = self.layout.program_file(name)
            with contextlib.suppress(OSError):
                text = path.read_text(encoding="utf-8")
                if "autostart=true" in text:
                    tmp = path.with_name(f".{path.name}.tmp")
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "w", encoding="utf-8") as handle:
                        handle.write(text.replace("autostart=true", "autostart=false"))
                    tmp.replace(path)
        if not self.running():
            return
        with self.rpc() as rpc:
            for slot in self.slots():
                if slot.state in ACTIVE_STATES:
                    rpc.stopProcess(slot.name, True)
