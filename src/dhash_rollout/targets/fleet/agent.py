"""The host's side of a fleet deploy: the local target's machinery, run *on* a service host.

The controller plans; the engine (pyinfra) reaches the host over SSH and runs one of these
commands there. Each one builds the host's :class:`~dhash_rollout.environments.Environment`
from a JSON spec the controller sends (its root, port, the shared database, the API token)
and calls :class:`~dhash_rollout.targets.local.LocalTarget` on it, so a host installs and
switches releases exactly as a single machine does: immutable release venvs under
``<root>/releases``, two supervisord slots, a blue/green switch that waits for the new
process's own ``/ready`` before ``current`` moves (docs/architecture.md, "Fleet").

- ``install``: the uploaded wheel becomes ``<root>/releases/<v>`` (idempotent), with the
  release's own settings (``--release-setting``) written beside it. It runs from the wheel
  itself on ``PYTHONPATH`` with the host's Python, so a host needs no toolkit beforehand.
- ``activate``: the blue/green switch to an installed release; it runs with *that release's*
  venv, the toolkit the release carries.
- ``shutdown``: stop the slots and supervisord (``dhash release stop`` on a fleet, tests).

Each command holds the host's agent lock (``<root>/agent.lock``, ``flock``) while it works:
a controller killed mid-step leaves its engine step running on the host, and the next
controller's step (a resume, an undo) must wait for it, not race it for the same slot.

The answer is one JSON line on stdout; a refusal exits 1 with the reason on stderr (the engine
reports it as the host's error).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shlex
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dhash_rollout.environments import Environment, EnvironmentSettings, HostSettings
from dhash_rollout.releases import (
    DEPS_MODES,
    DepsMode,
    ReleaseSource,
    release_path,
    write_release_settings,
)
from dhash_service.errors import DhashError

BIND_ALL = "0.0.0.0"  # noqa: S104 - a fleet host serves the proxy on its own address


@dataclass(frozen=True)
class HostSpec:
    """What a host's local target needs to know, sent by the controller with each command."""

    env: str
    root: str
    port: int
    database_url: str
    api_token: str | None = None
    deps: str = "shared"
    workers: int = 1
    grace: float = 5.0
    ready_timeout: float = 60.0

    @classmethod
    def for_host(cls, host: HostSettings, env: Environment) -> HostSpec:
        settings = env.settings
        grace = settings.shutdown_grace_seconds
        return cls(
            env=env.name,
            root=host.root,
            port=host.port,
            database_url=env.database_url,
            api_token=env.api_token,
            deps=settings.release_deps,
            workers=settings.workers,
            grace=5.0 if grace is None else grace,
            ready_timeout=settings.ready_timeout_seconds,
        )

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    def environment(self) -> Environment:
        root = Path(self.root)
        return Environment(
            name=self.env,
            root=root,
            port=self.port,
            url=f"http://127.0.0.1:{self.port}",
            database_url=self.database_url,
            api_token=self.api_token,
            settings=EnvironmentSettings(
                release_deps=self.deps,
                workers=self.workers,
                shutdown_grace_seconds=self.grace,
                ready_timeout_seconds=self.ready_timeout,
            ),
        )


def incoming(host: HostSettings, wheel_name: str) -> str:
    """Where the controller uploads a release's wheel on the host."""
    return f"{host.root}/incoming/{wheel_name}"


def install_command(
    host: HostSettings, spec: HostSpec, wheel_name: str, settings: Mapping[str, str] | None
) -> str:
    wheel = incoming(host, wheel_name)
    argv = [host.python, "-m", "dhash_rollout.targets.fleet.agent", "install", "--spec",
            spec.to_json(), "--wheel", wheel]  # fmt: skip
    if settings is not None:
        argv += ["--settings", json.dumps(dict(settings), sort_keys=True)]
    return f"PYTHONPATH={shlex.quote(wheel)} " + shlex.join(argv)


def _host_path(host: HostSettings) -> str:
    """``PATH`` with the host Python's scripts first: a release venv with shared dependencies
    finds supervisord there (with full ones it has its own, beside its Python)."""
    return f"PATH={shlex.quote(str(Path(host.python).parent))}:$PATH"


def activate_command(host: HostSettings, spec: HostSpec, version: str) -> str:
    python = release_path(Path(host.root), version) / "venv" / "bin" / "python"
    argv = [str(python), "-m", "dhash_rollout.targets.fleet.agent", "activate", "--spec",
            spec.to_json(), "--version", version]  # fmt: skip
    return (
        f"test -x {shlex.quote(str(python))} || {{ echo 'release {version} is not installed "
        f"on this host' >&2; exit 1; }}; {_host_path(host)} " + shlex.join(argv)
    )


def fenced(root: str, fence: int, command: str) -> str:
    """``command`` run only if no step sent *after* it has already run on the host.

    A controller killed mid-switch leaves its engine step in flight: it may reach the host
    after the next controller's undo has put the host back, and switch it again (the release
    the undo took away). Each switch carries a fence (when the controller sent it); under the
    host's fence lock the step records its fence, and a step older than the recorded one is
    refused (a fencing token). In the shell, not in the agent: the agent that runs is the
    release's own, and an older release's agent would know no fence. The lock's descriptor
    is closed for the command, so a supervisord it starts does not keep the lock."""
    lock = shlex.quote(f"{root}/agent.fence.lock")
    mark = shlex.quote(f"{root}/agent.fence")
    busy = shlex.quote(f"another switch held {root}/agent.fence.lock for 600 s")
    superseded = shlex.quote(
        "superseded: a step sent later has already run on this host (this one, "
        "from a controller that stopped, is refused)"
    )
    return (
        f"exec 9>>{lock} && flock -w 600 9 || {{ echo {busy} >&2; exit 1; }}; "
        f"last=$(cat {mark} 2>/dev/null); "
        f'if [ "${{last:-0}}" -gt {int(fence)} ]; then echo {superseded} >&2; exit 1; fi; '
        f"echo {int(fence)} > {mark}; {{ {command}; }} 9>&-"
    )


def shutdown_command(host: HostSettings, spec: HostSpec) -> str:
    """Stop the host's slots and supervisord with the release it serves (nothing: a no-op)."""
    current = f"{host.root}/current/venv/bin/python"
    argv = [current, "-m", "dhash_rollout.targets.fleet.agent", "shutdown", "--spec",
            spec.to_json()]  # fmt: skip
    return f"if test -x {shlex.quote(current)}; then {_host_path(host)} {shlex.join(argv)}; fi"


def _target(spec: HostSpec) -> Any:
    from dhash_rollout.targets.local import LocalTarget

    if spec.deps not in DEPS_MODES:
        raise DhashError(f"release deps must be one of {', '.join(DEPS_MODES)}")
    deps: DepsMode = "shared" if spec.deps == "shared" else "full"
    return LocalTarget(spec.environment(), deps=deps, bind=BIND_ALL)


def _install(spec: HostSpec, wheel: str, settings: str | None) -> dict[str, Any]:
    target = _target(spec)
    release = target.install(ReleaseSource("wheel", wheel))
    if settings is not None:
        write_release_settings(release, json.loads(settings))
    return {"version": release.version, "path": str(release.path)}


def _activate(spec: HostSpec, version: str) -> dict[str, Any]:
    done = _target(spec).activate(version)
    return {"version": done.version, "previous": done.previous, "changed": done.changed}


@contextlib.contextmanager
def host_lock(root: Path, timeout: float) -> Iterator[None]:
    """The host's agent lock, waited for up to ``timeout`` seconds."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DhashError(
                        f"another step still runs on this host ({root / 'agent.lock'} held "
                        f"for {timeout:g} s)"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # releases the lock


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dhash-fleet-agent")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("install", "activate", "shutdown"):
        command = sub.add_parser(name)
        command.add_argument("--spec", required=True)
        if name == "install":
            command.add_argument("--wheel", required=True)
            command.add_argument("--settings")
        if name == "activate":
            command.add_argument("--version", required=True)
    args = parser.parse_args(argv)
    try:
        spec = HostSpec(**json.loads(args.spec))
        with host_lock(Path(spec.root), timeout=600):
            if args.command == "install":
                answer = _install(spec, args.wheel, args.settings)
            elif args.command == "activate":
                answer = _activate(spec, args.version)
            else:
                _target(spec).shutdown()
                answer = {"stopped": True}
    except DhashError as exc:
        sys.stderr.write(f"{exc.message}\n")
        return 1
    except (ValueError, TypeError, OSError) as exc:
        sys.stderr.write(f"{type(exc).__name__}: {exc}\n")
        return 1
    sys.stdout.write(json.dumps(answer) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
