"""Fault injection for the crash tests: pause at a named point so a test can ``kill -9`` us.

Set ``DHASH_BACKUP_FAULT=<point>`` (read by :class:`~dhash_service.config.Settings` and passed in
by the CLI). When the run reaches that point it prints ``dhash-fault: paused at <point> pid=<pid>``
on stderr and sleeps; the test then sends SIGKILL, which is indistinguishable from a crash at
that exact moment. This is a test hook: in normal runs the setting is empty and nothing pauses.

Points: ``dump-<pct>`` (e.g. ``dump-10``, ``dump-50``, ``dump-90``: that share of the database
dump is written), ``before-zip-rename``, ``after-zip-rename`` (the archive is in place, its
``.sha256`` is not), ``before-checksum-rename``; for restore ``restore-<pct>`` (share of the
database load), ``restore-before-swap`` and ``restore-after-swap``.
"""

from __future__ import annotations

import os
import re
import sys
import time

from dhash_service.errors import ConfigError

PAUSE_SECONDS = 120.0
_FRACTION_RE = re.compile(r"^(?P<phase>[a-z]+)-(?P<pct>\d{1,2})$")


class FaultHook:
    def __init__(self, point: str | None = None) -> None:
        self.point = point or None
        self._fraction: tuple[str, float] | None = None
        if self.point and (match := _FRACTION_RE.match(self.point)):
            self._fraction = (match["phase"], int(match["pct"]) / 100)

    def reach(self, point: str) -> None:
        if self.point == point:
            self._pause()

    def reach_fraction(self, phase: str, fraction: float) -> None:
        if self._fraction and self._fraction[0] == phase and fraction >= self._fraction[1]:
            self._fraction = None  # pause once
            self._pause()

    def _pause(self) -> None:
        sys.stderr.write(f"dhash-fault: paused at {self.point} pid={os.getpid()}\n")
        sys.stderr.flush()
        time.sleep(PAUSE_SECONDS)
        raise ConfigError(f"fault point {self.point} reached and not killed within the pause")


NO_FAULT = FaultHook(None)
