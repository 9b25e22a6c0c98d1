"""The host connector: runs a step's shell commands on a set of hosts through pyinfra.

Our code plans (which hosts, which step, which commands); pyinfra executes them over SSH
(docs/architecture.md, "The fleet's engine"). One call is one pyinfra ``State`` over the
step's hosts: its ``Inventory`` (the hosts' SSH address, user, port and key), ``connect_all``,
one operation per step through ``add_op``, ``run_ops``, and each host's result read back from
the operation's meta (succeeded or not, its output).

pyinfra runs a step on its hosts in parallel with gevent, which needs the standard library
patched (``gevent.monkey.patch_all``) before anything opens a socket. The controller has
threads of its own (the monitor, the load of a test), so the engine runs in a child process
(``python -m dhash_rollout.targets.fleet.engine``): a JSON job on stdin, a JSON answer on
stdout. :func:`run_step` is the controller's side of that exchange.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dhash_rollout.environments import HostSettings
from dhash_service.errors import DhashError


class EngineError(DhashError):
    """The engine itself could not run (not a host failing: that is a :class:`HostResult`)."""

    exit_code = 1


@dataclass(frozen=True)
class HostResult:
    host: str
    ok: bool
    error: str | None  # why it failed: the connection, or the failed command's output
    output: str  # the commands' standard output (the last lines)


def _job(
    hosts: Sequence[HostSettings],
    commands: Mapping[str, Sequence[str]],
    *,
    step: str,
    parallel: int,
    known_hosts: Path,
    connect_timeout: int,
    uploads: Mapping[str, Sequence[tuple[str, str]]],
) -> dict[str, Any]:
    return {
        "step": step,
        "parallel": parallel,
        "connect_timeout": connect_timeout,
        "hosts": [
            {
                "name": h.name,
                "address": h.address,
                "ssh_user": h.ssh_user,
                "ssh_port": h.ssh_port,
                "ssh_key": h.ssh_key,
                "known_hosts": str(known_hosts),
                "commands": list(commands[h.name]),
                "uploads": [list(pair) for pair in uploads.get(h.name, ())],
            }
            for h in hosts
        ],
    }


def run_step(
    hosts: Sequence[HostSettings],
    commands: Mapping[str, Sequence[str]],
    *,
    step: str,
    known_hosts: Path,
    parallel: int = 1,
    connect_timeout: int = 10,
    timeout: float = 600.0,
    uploads: Mapping[str, Sequence[tuple[str, str]]] | None = None,
) -> dict[str, HostResult]:
    """Run ``commands[host]`` on every host (``parallel`` at a time) and report each one.
    ``uploads[host]``: ``(local file, remote path)`` pairs sent first with pyinfra's
    ``files.put`` (over SFTP; skipped when the remote copy already matches).

    Host keys are trusted on first use and recorded in ``known_hosts`` (later changes are
    refused, as OpenSSH's ``accept-new``)."""
    missing = [h.name for h in hosts if h.name not in commands]
    if missing:
        raise EngineError(f"no commands for {', '.join(missing)} in step {step}")
    job = _job(
        hosts, commands, step=step, parallel=parallel, known_hosts=known_hosts,
        connect_timeout=connect_timeout, uploads=uploads or {},
    )  # fmt: skip
    known_hosts.parent.mkdir(parents=True, exist_ok=True)
    known_hosts.touch(exist_ok=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dhash_rollout.targets.fleet.engine"],
            input=json.dumps(job), capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise EngineError(f"step {step} did not finish on its hosts in {timeout:g} s") from exc
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        tail = (done.stderr or done.stdout).strip()[-800:]
        message = f"the engine failed in step {step} (exit {done.returncode}): {tail}"
        raise EngineError(message) from None
    if "error" in answer:
        raise EngineError(f"the engine failed in step {step}: {answer['error']}")
    return {
        name: HostResult(name, bool(r["ok"]), r.get("error"), r.get("output", ""))
        for name, r in answer["hosts"].items()
    }


def _tail(lines: Sequence[str], n: int = 20) -> str:
    return "\n".join(lines[-n:])


def _execute(job: Mapping[str, Any]) -> dict[str, Any]:  # pragma: no cover - child process
    """The child's side: one pyinfra State over the job's hosts, one operation, results."""
    from pyinfra.api.command import StringCommand
    from pyinfra.api.config import Config
    from pyinfra.api.connect import connect_all, disconnect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.api.inventory import Inventory
    from pyinfra.api.operation import add_op, operation
    from pyinfra.api.operations import run_ops
    from pyinfra.api.state import State
    from pyinfra.context import host as current
    from pyinfra.operations import files

    names = [
        (
            h["name"],
            {
                "ssh_hostname": h["address"],
                "ssh_user": h["ssh_user"],
                "ssh_port": h["ssh_port"],
                **({"ssh_key": h["ssh_key"]} if h["ssh_key"] else {}),
                "ssh_known_hosts_file": h["known_hosts"],
                "ssh_strict_host_key_checking": "accept-new",
                "dhash_commands": h["commands"],
                "dhash_uploads": h.get("uploads", []),
            },
        )
        for h in job["hosts"]
    ]
    inventory = Inventory((names, {}))  # type: ignore[no-untyped-call]
    config = Config(  # type: ignore[no-untyped-call]
        PARALLEL=int(job["parallel"]), CONNECT_TIMEOUT=int(job["connect_timeout"])
    )
    state = State(inventory=inventory, config=config)

    @operation(is_idempotent=False)
    def dhash_step() -> Any:  # one step of a fleet deploy: the host's uploads, then commands
        for local, remote in current.data.get("dhash_uploads"):
            yield from files.put._inner(src=local, dest=remote, add_deploy_dir=False)
        for command in current.data.get("dhash_commands"):
            yield StringCommand(command)

    results: dict[str, Any] = {}
    try:
        connect_all(state)
    except PyinfraError as exc:
        return {"hosts": {h["name"]: {"ok": False, "error": f"connect: {exc}", "output": ""}
                          for h in job["hosts"]}}  # fmt: skip
    for h in inventory:
        if h not in state.activated_hosts:
            results[h.name] = {"ok": False, "error": "could not connect over SSH", "output": ""}
    metas: dict[Any, Any] = {}
    if state.activated_hosts:
        metas = add_op(state, dhash_step, name=f"dhash {job['step']}")
        try:
            run_ops(state)
        except PyinfraError:
            pass  # every host failed: each one's result below says why
        finally:
            disconnect_all(state)
    for h, meta in metas.items():
        if h.name in results:
            continue
        ok = meta.is_complete() and meta.did_succeed()
        stdout = _tail(meta.stdout_lines) if meta.is_complete() else ""
        stderr = _tail(meta.stderr_lines) if meta.is_complete() else ""
        results[h.name] = {
            "ok": ok,
            "error": None if ok else (stderr or stdout or "the step did not complete"),
            "output": stdout,
        }
    return {"hosts": results}


def main() -> None:  # pragma: no cover - child process
    from gevent import monkey  # type: ignore[import-untyped]

    monkey.patch_all()
    import logging

    logging.basicConfig(level=logging.CRITICAL)
    try:
        answer = _execute(json.loads(sys.stdin.read()))
    except Exception as exc:  # the answer must say why whatever broke
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
