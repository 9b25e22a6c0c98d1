"""Is the new process itself ready? With SO_REUSEPORT every process bound to the port gets new
connections, so readiness is asked of one process: ``/health`` (its pid) then ``/ready`` on one
kept-alive connection, and the pid is matched against the slot's process tree."""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

from dhash_rollout.targets.local.supervisor import Supervisor
from dhash_service.errors import CheckFailed

DOWN_STATES = ("FATAL", "EXITED", "STOPPED", "BACKOFF", "ABSENT")


def descends_from(pid: int, ancestor: int) -> bool:
    """``pid`` is ``ancestor`` or one of its children (uvicorn workers), per ``/proc``."""
    for _ in range(4):
        if pid == ancestor:
            return True
        try:
            status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
        except OSError:
            return False
        match = re.search(r"^PPid:\s+(\d+)", status, re.M)
        if not match or int(match.group(1)) <= 1:
            return False
        pid = int(match.group(1))
    return False


class Readiness:
    def __init__(self, port: int, ready_timeout: float) -> None:
        self.port = port
        self.ready_timeout = ready_timeout

    def identify(self, timeout: float = 2.0) -> tuple[int, bool] | None:
        """Which process answers, and whether it is ready: ``/health`` (its pid) then ``/ready``
        on ONE kept-alive connection, so both answers come from the same process even though
        SO_REUSEPORT spreads new connections over every process bound to the port."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("GET", "/health")
            first = conn.getresponse()
            body = first.read()
            sock = conn.sock
            if first.status != 200 or first.will_close or sock is None:
                return None
            pid = json.loads(body).get("pid")
            conn.request("GET", "/ready")
            second = conn.getresponse()
            second.read()
            if conn.sock is not sock or not isinstance(pid, int):
                return None  # reconnected: the answer may come from another process
            return pid, second.status == 200
        except (OSError, http.client.HTTPException, ValueError, AttributeError):
            return None
        finally:
            conn.close()

    def all_reach(self, pid: int | None, probes: int = 4) -> bool:
        """Whether fresh connections all reach the process ``pid`` (or its workers)."""
        if pid is None:
            return False
        for _ in range(probes):
            seen = self.identify()
            if seen is None or not descends_from(seen[0], pid):
                return False
        return True

    def wait_ready(
        self,
        supervisor: Supervisor,
        slot: str,
        why: Callable[[str], str],
        timeout: float | None = None,
    ) -> int:
        """Poll until the process of ``slot`` itself answers ``/ready``; returns its pid.

        Fails fast when the process dies (a new pid means supervisord restarted it); ``why``
        says what the process wrote."""
        limit = timeout or self.ready_timeout
        deadline = time.monotonic() + limit
        first_pid: int | None = None
        while time.monotonic() < deadline:
            current = supervisor.slot(slot)
            first_pid = first_pid or current.pid
            restarted = current.pid is not None and current.pid != first_pid
            if restarted or current.state in DOWN_STATES:
                what = "restarted after exiting" if restarted else current.state
                raise CheckFailed(f"{slot} ({current.release}) {what}: {why(slot)}")
            if current.pid:
                # New connections land on either process; a few tries reach the new one.
                for _ in range(8):
                    seen = self.identify()
                    if seen and seen[1] and descends_from(seen[0], current.pid):
                        return seen[0]
            time.sleep(0.2)
        raise CheckFailed(f"{slot} did not become ready within {limit:.0f} s: {why(slot)}")
