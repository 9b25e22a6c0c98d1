"""Steering set through a borrowed serving listener: no socket of ours ever joins the port group.

Two real processes listen on one SO_REUSEPORT port (the old release first, then the new), each
answering with its pid. Joining the group with a socket of our own, even for microseconds, let
the kernel queue a client's connection on it, reset when we closed (seen in a demo run, and 9-15
resets per 2,000 joins beside four busy clients); borrowing a server's own socket through
``pidfd_getfd`` has no such window.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from dhash_rollout.targets import steering
from dhash_rollout.targets.socket_table import listening_inodes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux reuseport")
HOST = "127.0.0.1"
_SERVER = """
import os, socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
srv.bind(("127.0.0.1", int(sys.argv[1])))
srv.listen(128)
print("listening", flush=True)
while True:
    conn, _ = srv.accept()
    with conn:
        conn.sendall(str(os.getpid()).encode())
"""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def old_and_new() -> Iterator[tuple[int, int, int]]:
    """(port, old pid, new pid): two serving processes, the old one joined the group first."""
    port = _free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(2):
            proc = subprocess.Popen(
                [sys.executable, "-c", _SERVER, str(port)], stdout=subprocess.PIPE
            )
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline() == b"listening\n"
        yield port, procs[0].pid, procs[1].pid
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()


def answered_by(port: int, n: int) -> list[int]:
    pids = []
    for _ in range(n):
        with socket.create_connection((HOST, port), timeout=5) as conn:
            pids.append(int(conn.recv(32)))
    return pids


@pytest.fixture
def never_join(monkeypatch: pytest.MonkeyPatch) -> None:
    def joined(host: str, port: int) -> socket.socket:
        raise AssertionError(f"a socket of ours joined {host}:{port}'s group")

    monkeypatch.setattr(steering, "_group_member", joined)


def borrowing_allowed() -> bool:
    return os.geteuid() == 0 or not os.path.exists("/proc/sys/kernel/yama/ptrace_scope")


needs_borrow = pytest.mark.skipif(not borrowing_allowed(), reason="pidfd_getfd needs ptrace")


@needs_borrow
@pytest.mark.usefixtures("never_join")
def test_a_switch_steers_every_new_connection_to_the_new_process_without_joining_the_group(
    old_and_new: tuple[int, int, int],
) -> None:
    port, old, new = old_and_new
    group = listening_inodes(port, host=HOST)
    assert len(group) == 2

    def reaches_new() -> bool:
        return set(answered_by(port, 5)) == {new}

    with steering.steer_new_connections(HOST, port, reaches_new) as steered:
        assert steered is True
        assert listening_inodes(port, host=HOST) == group  # nothing of ours in the table
        assert set(answered_by(port, 100)) == {new}
    # detached at the end: the kernel spreads over both again
    assert set(answered_by(port, 200)) == {old, new}


@needs_borrow
@pytest.mark.usefixtures("never_join")
def test_a_program_a_killed_run_left_is_cleared_through_a_serving_listener(
    old_and_new: tuple[int, int, int],
) -> None:
    port, old, new = old_and_new
    member = steering.borrowed_member(HOST, port)
    assert member is not None
    with member:
        steering.attach(member, steering.always(1))  # what a killed switch leaves behind
    assert set(answered_by(port, 50)) == {new}  # the program outlived the borrowed duplicate
    assert steering.clear_steering(HOST, port) is True
    assert set(answered_by(port, 200)) == {old, new}
    assert steering.clear_steering(HOST, port) is False  # nothing left to clear


def test_where_nothing_can_be_borrowed_the_switch_still_steers_by_joining(
    old_and_new: tuple[int, int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, old, new = old_and_new
    monkeypatch.setattr(steering, "borrowed_member", lambda host, port: None)
    with steering.steer_new_connections(
        HOST, port, lambda: set(answered_by(port, 5)) == {new}
    ) as steered:
        assert steered is True
        assert set(answered_by(port, 100)) == {new}
    assert set(answered_by(port, 200)) == {old, new}


def test_a_name_rather_than_an_address_is_not_borrowed_from() -> None:
    assert steering.borrowed_member("localhost", _free_port()) is None


@pytest.mark.usefixtures("never_join")
def test_a_port_nobody_listens_on_has_no_program_to_clear_and_is_not_joined() -> None:
    assert steering.clear_steering(HOST, _free_port()) is False
