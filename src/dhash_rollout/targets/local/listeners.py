"""Who really listens on the environment's port, from the kernel's socket table.

With SO_REUSEPORT any process of the same user can join the port group and take a share of new
connections (issue 12: a stray ``dhash serve`` got 8 of 20 requests, 3 ingests into its own
database), and after supervisord dies its orphaned service keeps serving while supervisord's
view says ABSENT. So the truth is read from Linux itself:

1. ``/proc/net/tcp`` and ``/proc/net/tcp6``: the sockets in state LISTEN (``0A``) on the port,
   each with its inode (``proc(5)``);
2. ``/proc/<pid>/fd/*``: the links ``socket:[<inode>]`` name the processes holding them (only
   our own user's processes are readable, which are exactly the ones that can join the group);
3. pid -> slot: a listener is a slot's when it descends from that slot's supervised process;
   an *orphan* when its command runs a release of this environment (``<root>/releases/``) but
   no slot owns it; else it is *foreign*.

Off Linux (no ``/proc/net``) nothing is known and nothing is refused.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dhash_rollout.targets.local.readiness import descends_from
from dhash_rollout.targets.socket_table import PROC, listening_inodes, socket_holders


@dataclass(frozen=True)
class Listener:
    pid: int | None  # None: the socket's holder is not readable (another user)
    inode: int
    kind: str  # slot | orphan | foreign | controller (this process: a steering socket)
    slot: str | None = None
    release: str | None = None
    command: str = ""

    def describe(self) -> str:
        who = f"pid {self.pid}" if self.pid is not None else f"socket inode {self.inode}"
        what = f" ({self.command})" if self.command else ""
        return f"{who}{what}"

    def to_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "kind": self.kind,
            "slot": self.slot,
            "release": self.release,
            "command": self.command,
        }


def _command(pid: int, proc: Path) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ""
    return " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)


def _release_of(command: str, releases_dir: Path) -> str | None:
    marker = f"{releases_dir}/"
    if marker not in command:
        return None
    return command.split(marker, 1)[1].split("/", 1)[0] or None


def listeners(
    port: int,
    *,
    slots: dict[str, int],
    slot_releases: dict[str, str | None],
    releases_dir: Path,
    proc: Path = PROC,
) -> list[Listener]:
    """Every listener on ``port``, classified (``slots``: slot name -> its supervised pid)."""
    inodes = listening_inodes(port, proc)
    holders = socket_holders(inodes, proc)
    me = os.getpid()
    found: list[Listener] = []
    for inode in sorted(inodes):
        pid = holders.get(inode)
        if pid is None:
            found.append(Listener(None, inode, "foreign"))
            continue
        command = _command(pid, proc)
        slot = next((name for name, top in slots.items() if descends_from(pid, top)), None)
        if slot is not None:
            found.append(Listener(pid, inode, "slot", slot, slot_releases.get(slot), command))
        elif pid == me:
            found.append(Listener(pid, inode, "controller", command=command))
        elif (release := _release_of(command, releases_dir)) is not None:
            found.append(Listener(pid, inode, "orphan", release=release, command=command))
        else:
            found.append(Listener(pid, inode, "foreign", command=command))
    return found


def serving_root(pid: int, proc: Path = PROC) -> int:
    """The ``dhash serve`` parent of a listening worker (workers are spawned children whose own
    command line differs), the process to signal so the whole service drains."""
    top = pid
    for _ in range(4):
        try:
            status = (proc / str(top) / "status").read_text(encoding="utf-8")
        except OSError:
            return top
        parent = next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0
        )
        if parent <= 1 or parent == os.getpid() or "serve" not in _command(parent, proc).split():
            return top
        top = parent
    return top


def stop_orphans(orphans: Iterable[Listener], grace: float) -> list[int]:
    """SIGTERM each orphaned service (it drains, like a slot retiring) and wait for it to exit,
    SIGKILL after ``grace`` + 10 s; the pids stopped."""
    roots = sorted({serving_root(o.pid) for o in orphans if o.pid is not None})
    for pid in roots:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace + 10
    for pid in roots:
        while time.monotonic() < deadline and process_alive(pid):
            time.sleep(0.05)
        if process_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return roots


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (another user's counts; a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its new parent) counts as gone.
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
