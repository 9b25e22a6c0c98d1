"""Whether this worker is draining: set on SIGTERM so ``/ready`` turns 503 before it exits."""

from __future__ import annotations

import threading


class Lifecycle:
    """Thread-safe drain flag; the server sets it from a signal handler, routes read it."""

    def __init__(self) -> None:
        self._draining = threading.Event()

    def begin_drain(self) -> None:
        self._draining.set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()
