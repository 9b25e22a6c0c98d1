"""The kernel's table of listening TCP sockets (/proc/net/tcp*) and who holds each one.

Shared by the local target (who really listens on the environment's port) and the steering
(a serving listener to set the port group's program through)."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
_LISTEN = "0A"


def proc_address(host: str) -> str:
    """``host`` as /proc/net/tcp* writes a local address: 32-bit words in host byte order."""
    if ":" in host:
        words = struct.unpack("=4I", socket.inet_pton(socket.AF_INET6, host))
    else:
        words = struct.unpack("=I", socket.inet_aton(host))
    return "".join(f"{word:08X}" for word in words)


def listening_inodes(port: int, proc: Path = PROC, *, host: str | None = None) -> set[int]:
    """Inodes of the TCP sockets (IPv4 and IPv6) listening on ``port`` (bound to ``host``
    only, when given: an SO_REUSEPORT group is one address and port)."""
    inodes: set[int] = set()
    address = proc_address(host) if host else None
    for name in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / name).read_text(encoding="ascii").splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _LISTEN:
                continue
            local, _, hex_port = fields[1].rpartition(":")
            if address is not None and local != address:
                continue
            if int(hex_port, 16) == port and fields[9] != "0":
                inodes.add(int(fields[9]))
    return inodes


def socket_fds(inodes: Iterable[int], proc: Path = PROC) -> dict[int, tuple[int, int]]:
    """inode -> (pid, fd number) for the sockets among ``inodes`` whose holder we may read."""
    wanted = {f"socket:[{inode}]": inode for inode in inodes}
    found: dict[int, tuple[int, int]] = {}
    if not wanted:
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError, ValueError):
                    inode = wanted.get(os.readlink(fd))
                    if inode is not None and inode not in found:
                        found[inode] = (int(entry.name), int(fd.name))
    return found


def socket_holders(inodes: Iterable[int], proc: Path = PROC) -> dict[int, int]:
    """inode -> pid for the sockets among ``inodes`` whose holder we may read."""
    return {inode: pid for inode, (pid, _fd) in socket_fds(inodes, proc).items()}
