"""The listening socket `dhash serve` binds: shareable by port, and TCP so responses are not
held back by Nagle's algorithm (a ~40 ms stall per keep-alive response)."""

from __future__ import annotations

import socket

import pytest

from dhash_service.errors import ConfigError
from dhash_service.worker import bind_socket


def test_the_listener_is_tcp_with_so_reuseport() -> None:
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP  # asyncio then sets TCP_NODELAY per connection
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        second = bind_socket("127.0.0.1", sock.getsockname()[1])  # a deploy's overlap
        second.close()
    finally:
        sock.close()


def test_a_port_held_without_so_reuseport_is_a_config_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        with pytest.raises(ConfigError, match="cannot bind"):
            bind_socket("127.0.0.1", holder.getsockname()[1])
