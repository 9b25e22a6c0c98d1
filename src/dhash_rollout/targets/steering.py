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

The program belongs to the group, not to the socket that attached it: it outlives that socket,
and a controller killed inside a switch leaves it behind (issue 12). Left there, ``return 1``
sends every new connection to whichever process joined second: the next switch's new, unchecked
slot, or, after a killed deploy, the new slot rather than the old release the rollback waits
for. So a switch detaches its program when done, and :func:`clear_steering` removes one that a
killed run left before anything waits for readiness.

Attaching and detaching need a member of the group. Joining it with a socket of our own has a
window: between joining and closing (or attaching), the kernel may hand our socket a new
connection, which is reset when we close (unless ``tcp_migrate_req`` hands it to a peer): seen
as 63 resets in 66,857 connections over 2,000 joins beside four busy clients, and once as a
reset request in a demo run. So we borrow a member instead: ``pidfd_getfd(2)`` (Linux 5.6)
gives us a duplicate of a serving process's own listening socket, the program is attached or
detached through it, and the duplicate is closed at once, so no socket of ours ever joins the
group and none outlives its process. Joining stays the fallback where borrowing is not allowed
(``pidfd_getfd`` needs ptrace rights over the holder: root, or the same user without Yama's
restrictions).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import struct
import sys
from collections.abc import Callable, Iterator

from dhash_rollout.targets.socket_table import listening_inodes, socket_fds

SO_ATTACH_REUSEPORT_CBPF = 51
SO_DETACH_REUSEPORT_BPF = 68
_BPF_RET_K = 0x06  # BPF_RET | BPF_K: return the constant


def _return_program(index: int) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    """A ``struct sock_fprog`` for the one-instruction program ``return index``."""
    instruction = ctypes.create_string_buffer(struct.pack("=HBBI", _BPF_RET_K, 0, 0, index))
    fprog = struct.pack("@HP", 1, ctypes.addressof(instruction))
    return fprog, instruction  # the caller keeps the instruction alive across setsockopt


def _group_member(host: str, port: int) -> socket.socket:
    """A listening socket of our own in the port's SO_REUSEPORT group."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1)
    except OSError:
        sock.close()
        raise
    return sock


SYS_PIDFD_GETFD = 438  # the same number on every architecture (the unified syscall table)


def _borrow(pid: int, fd: int, host: str, port: int) -> socket.socket | None:
    """A duplicate of process ``pid``'s socket ``fd`` if it listens on ``host:port``, else None
    (gone, no right to it, or the fd number now names something else)."""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        dup = int(libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0))
    finally:
        os.close(pidfd)
    if dup < 0:
        return None
    try:
        sock = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return None
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        bound = sock.getsockname()[:2]
    except OSError:
        listening, bound = False, None
    if not listening or bound is None or bound[1] != port or bound[0] != host:
        sock.close()
        return None
    return sock


def borrowed_member(host: str, port: int) -> socket.socket | None:
    """A duplicate of a serving listener of ``host:port``'s group (see the module docstring);
    None when there is none we may borrow. Close it as soon as the program is set."""
    try:
        inodes = listening_inodes(port, host=host)
    except OSError:  # not an address literal (a name): join instead
        return None
    for pid, fd in socket_fds(inodes).values():
        if pid == os.getpid():
            continue  # our own listener (tests): borrowing it would be a plain dup
        sock = _borrow(pid, fd, host, port)
        if sock is not None:
            return sock
    return None


@contextlib.contextmanager
def member(host: str, port: int) -> Iterator[socket.socket]:
    """A member of the group to set its program through, for a moment: a borrowed serving
    listener when there is one, else a socket of our own joining the group (with its window).
    ``OSError`` when neither is possible."""
    sock = borrowed_member(host, port) or _group_member(host, port)
    with sock:
        yield sock


def _detach(sock: socket.socket) -> bool:
    """Detach the group's program through ``sock``; False when there was none (ENOENT)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
    except OSError:
        return False
    return True


def clear_steering(host: str, port: int) -> bool:
    """Remove a steering program left on ``host:port``'s group; True when there was one.

    Never raises: off Linux, or when the port cannot be joined, there is nothing to clear."""
    if not sys.platform.startswith("linux"):
        return False
    with contextlib.suppress(OSError):  # a name, not an address: the join below decides
        if not listening_inodes(port, host=host):
            return False  # no listener, no group: the kernel frees its program with it
    try:
        with member(host, port) as sock:
            return _detach(sock)
    except OSError:
        return False


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
    borrowed = _steer_through_borrowed(host, port, reaches_new)
    if borrowed is not None:
        try:
            yield borrowed
        finally:
            if borrowed:
                with contextlib.suppress(OSError), member(host, port) as sock:
                    _detach(sock)
        return
    try:
        sock = _group_member(host, port)
    except OSError:
        yield False
        return
    steering = False
    try:
        try:
            for index in (1, 0):
                fprog, _keep = _return_program(index)
                sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
                if reaches_new():
                    steering = True
                    break
            if not steering:
                _detach(sock)
        except OSError:
            steering = False
        yield steering
    finally:
        # Detached before closing: a program left on the group would steer the next switch's
        # new slot every connection the moment it listens (see the module's docstring).
        if steering:
            _detach(sock)
        sock.close()


def _steer_through_borrowed(host: str, port: int, reaches_new: Callable[[], bool]) -> bool | None:
    """Attach and check the program through a borrowed member (closed before returning):
    whether steering is in effect, or None when no member could be borrowed."""
    sock = borrowed_member(host, port)
    if sock is None:
        return None
    with sock:
        try:
            for index in (1, 0):
                fprog, _keep = _return_program(index)
                sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
                if reaches_new():
                    return True
            _detach(sock)
        except OSError:
            _detach(sock)
    return False


# --- weighted steering: the canary's share of new connections ---------------------------------
#
# A classic-BPF program may read a random number (the ancillary load SKF_AD_RANDOM, which the
# kernel converts to a call of its prandom helper), so one program on the port group sends each
# new connection to the canary with probability weight and to stable otherwise, choosing a
# member index among each release's listeners (its workers). The program stays with the group
# after the socket that attached it is closed; a later attach replaces it.

_SKF_AD_RANDOM = (-0x1000 + 56) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_RANDOM
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_ALU_MOD_K = 0x94  # BPF_ALU | BPF_MOD | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
WEIGHT_SCALE = 10_000  # weights in basis points


def _pick(indices: tuple[int, ...]) -> list[tuple[int, int, int, int]]:
    """Instructions returning one of ``indices`` uniformly (a random draw, then a jump chain)."""
    if len(indices) == 1:
        return [(_BPF_RET_K, 0, 0, indices[0])]
    out = [(_LD_W_ABS, 0, 0, _SKF_AD_RANDOM), (_ALU_MOD_K, 0, 0, len(indices))]
    for i, index in enumerate(indices[:-1]):
        out += [(_JEQ_K, 0, 1, i), (_BPF_RET_K, 0, 0, index)]
    out.append((_BPF_RET_K, 0, 0, indices[-1]))
    return out


def weighted_program(
    weight_bp: int, canary: tuple[int, ...], stable: tuple[int, ...]
) -> list[tuple[int, int, int, int]]:
    """``(code, jt, jf, k)`` instructions: a connection goes to one of ``canary`` with
    probability ``weight_bp / 10000``, else to one of ``stable``."""
    if not 0 <= weight_bp <= WEIGHT_SCALE:
        raise ValueError(f"a weight is 0..{WEIGHT_SCALE} basis points, got {weight_bp}")
    if not canary or not stable:
        raise ValueError("both releases need at least one listener index")
    to_stable = _pick(stable)
    to_canary = _pick(canary)
    head = [
        (_LD_W_ABS, 0, 0, _SKF_AD_RANDOM),
        (_ALU_MOD_K, 0, 0, WEIGHT_SCALE),
        # random >= weight: stable (the next instructions), else skip over them to the canary
        (_JGE_K, 0, len(to_stable), weight_bp),
    ]
    if len(to_stable) > 255:
        raise ValueError("too many listeners for one jump")
    return head + to_stable + to_canary


def _fprog(
    instructions: list[tuple[int, int, int, int]],
) -> tuple[bytes, ctypes.Array[ctypes.c_char]]:
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in instructions)
    buf = ctypes.create_string_buffer(raw, len(raw))
    return struct.pack("@HP", len(instructions), ctypes.addressof(buf)), buf


@contextlib.contextmanager
def group_member(host: str, port: int) -> Iterator[socket.socket]:
    """A member of the port's group through which programs are attached: a borrowed serving
    listener (no window), else a listener of our own that never accepts (it joined last, so
    a program never returns its index)."""
    with member(host, port) as sock:
        yield sock


def attach(sock: socket.socket, instructions: list[tuple[int, int, int, int]]) -> None:
    """Attach a program to the group of ``sock`` (replacing the group's program)."""
    fprog, _keep = _fprog(instructions)
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)


def always(index: int) -> list[tuple[int, int, int, int]]:
    return [(_BPF_RET_K, 0, 0, index)]


def detach(sock: socket.socket) -> None:
    """Remove the group's program: the kernel spreads new connections itself again."""
    sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_REUSEPORT_BPF, 0)
