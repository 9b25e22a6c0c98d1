"""Send every new connection to the new process while the old one drains (Linux, SO_REUSEPORT).

With SO_REUSEPORT the kernel spreads new connections over every listener on the port, the old
process's included, until the very moment it closes: a connection that lands there just before
(queued, or accepted but not yet read) is reset. Marking the old process "not ready" does not
help, since no load balancer reads ``/ready`` here.

The kernel lets a classic-BPF program choose the listener by its index in the port's group
(``SO_ATTACH_REUSEPORT_CBPF``). Members are indexed in the order they started listening, so with
the old process at 0 and the new one at 1, a one-instruction program ``return 1`` sends every new
connection to the new process. The program belongs to the group, so we attach it through a
socket of our own that joins the group for the duration (index 2, never chosen). When the old
process leaves, the kernel moves the last member into its index, which keeps the new process at
its index until we are gone; an index that does not exist falls back to the kernel's spreading.
Which index the new process has is checked, not assumed: a few probes on fresh connections must
all reach it, else index 0 is tried, else the program is detached.

Where any of this is unavailable, steering is skipped and the switch relies on the drain (and on
``net.ipv4.tcp_migrate_req``).
"""

from __future__ import annotations

import contextlib
import ctypes
import socket
import struct
import sys
from collections.abc import Callable, Iterator

SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant


def _return_program(index: int) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    """A ``struct sock_fprog`` for the one-instruction program ``return index``."""
    instruction = ctypes.create_string_buffer(struct.pack("=HBBI", _BPF_RET_K, 0, 0, index))
    fprog = struct.pack("@HP", 1, ctypes.addressof(instruction))
    return fprog, instruction  # the caller keeps the instruction alive across setsockopt


@contextlib.contextmanager
def steer_new_connections(host: str, port: int, reaches_new: Callable[[], bool]) -> Iterator[bool]:
    """Steer new connections on ``host:port`` to the new process while inside.

    ``reaches_new`` probes the port on fresh connections and says whether they all reached the
    new process: it picks the member index (1, else 0) and proves the program works. Yields
    whether steering is in effect; never raises for an unsupported platform or kernel.
    """
    if not sys.platform.startswith("linux"):
        yield False
        return
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    steering = False
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            sock.listen(1)
            for index in (1, 0):
                fprog, _keep = _return_program(index)
                sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
                if reaches_new():
                    steering = True
                    break
            if not steering:
                sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
        except OSError:
            steering = False
        yield steering
    finally:
        # Closed with the program still attached: it never picks our socket, so nothing is
        # queued on it, and detaching first would open a moment where the kernel could.
        # Left on the group, the program is harmless: with one member its index 1 does not
        # exist (the kernel falls back to its own choice); the next switch attaches its own.
        sock.close()
