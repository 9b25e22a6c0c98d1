"""The weighted reuseport program on real loopback listeners: the canary's share of new
connections is the weight, the program outlives the socket that attached it, and a program
that sends everything to stable takes the canary out of rotation."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator

import pytest

from dhash_rollout.targets.steering import (
    always,
    attach,
    group_member,
    weighted_program,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux reuseport")
CONNECTIONS = 2000


@contextlib.contextmanager
def listeners(n: int) -> Iterator[tuple[int, list[socket.socket]]]:
    socks: list[socket.socket] = []
    try:
        port = 0
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind(("127.0.0.1", port))
            s.listen(4096)
            s.setblocking(False)
            port = s.getsockname()[1]
            socks.append(s)
        yield port, socks
    finally:
        for s in socks:
            s.close()


def spread(port: int, socks: list[socket.socket], n: int = CONNECTIONS) -> list[int]:
    """Open ``n`` connections and count which listener each one was queued on."""
    counts = [0] * len(socks)
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port)):
            pass
        for i, s in enumerate(socks):  # drain as we go so no accept queue fills
            with contextlib.suppress(BlockingIOError):
                while True:
                    conn, _ = s.accept()
                    conn.close()
                    counts[i] += 1
    return counts


def within(observed: int, n: int, p: float) -> bool:
    sd = (n * p * (1 - p)) ** 0.5
    return abs(observed - n * p) <= 4.5 * sd  # fails by chance about once in 150,000 runs


@pytest.mark.parametrize("weight_bp", [500, 2500])
def test_the_canary_gets_its_weight_of_new_connections(weight_bp: int) -> None:
    with listeners(2) as (port, socks):
        with group_member("127.0.0.1", port) as member:
            attach(member, weighted_program(weight_bp, canary=(1,), stable=(0,)))
        # the socket that attached the program is gone; the program stays with the group
        counts = spread(port, socks)
    assert sum(counts) == CONNECTIONS
    assert within(counts[1], CONNECTIONS, weight_bp / 10_000), counts


def test_each_release_spreads_its_share_over_its_own_workers() -> None:
    with listeners(4) as (port, socks):
        with group_member("127.0.0.1", port) as member:
            attach(member, weighted_program(3000, canary=(2, 3), stable=(0, 1)))
        counts = spread(port, socks)
    assert within(counts[2] + counts[3], CONNECTIONS, 0.3), counts
    assert within(counts[2], counts[2] + counts[3], 0.5), counts
    assert within(counts[0], counts[0] + counts[1], 0.5), counts


def test_weight_zero_and_always_stable_take_the_canary_out_of_rotation() -> None:
    with listeners(2) as (port, socks), group_member("127.0.0.1", port) as member:
        attach(member, weighted_program(0, canary=(1,), stable=(0,)))
        assert spread(port, socks, 300) == [300, 0]
        attach(member, always(1))
        assert spread(port, socks, 300) == [0, 300]


@pytest.mark.parametrize(
    ("weight", "canary", "stable", "message"),
    [
        (-1, (1,), (0,), "basis points"),
        (10_001, (1,), (0,), "basis points"),
        (500, (), (0,), "at least one listener"),
    ],
)
def test_a_bad_weight_or_an_empty_release_is_refused(
    weight: int, canary: tuple[int, ...], stable: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        weighted_program(weight, canary, stable)
