"""The canary's share of real connections on the production port (Linux reuseport group).

Canary and stable listen on one port; :mod:`dhash_rollout.targets.steering`'s weighted program
decides per new connection. Which member index of the group belongs to which release is found
out, not assumed: a program that returns one index is attached for a moment, fresh connections
say (``/health``) whose process answers, for each index in turn; then the weighted program is
attached. During the mapping, every new connection goes to one release for a few milliseconds;
both releases are serving, so nothing fails (the canary takes a short burst at worst).
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable
from dataclasses import dataclass

from dhash_rollout.targets.steering import (
    WEIGHT_SCALE,
    always,
    attach,
    detach,
    group_member,
    weighted_program,
)
from dhash_service.errors import CheckFailed

MAX_MEMBERS = 64


def answering_pid(port: int, timeout: float = 2.0) -> int | None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health", headers={"Connection": "close"})
        resp = conn.getresponse()
        pid = json.loads(resp.read()).get("pid")
        return pid if isinstance(pid, int) else None
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


@dataclass(frozen=True)
class Members:
    """The group's member indices of each release."""

    canary: tuple[int, ...]
    stable: tuple[int, ...]


def map_members(
    port: int, classify: Callable[[int], str | None], members: int, *, probes: int = 3
) -> Members:
    """Which indices (0 .. members-1) are canary's and stable's, by asking each one."""
    found: dict[str, list[int]] = {"canary": [], "stable": []}
    with group_member("127.0.0.1", port) as sock:
        try:
            for index in range(min(members, MAX_MEMBERS)):
                attach(sock, always(index))
                pids = [answering_pid(port) for _ in range(probes)]
                names = {classify(pid) if pid else None for pid in pids}
                if len(names) == 1 and (name := names.pop()) in found:
                    found[name].append(index)
        except OSError:
            detach(sock)
            raise
        if not found["canary"] or not found["stable"]:
            if found["stable"]:  # everything to stable's listeners, the canary out of rotation
                attach(sock, weighted_program(0, tuple(found["stable"]), tuple(found["stable"])))
            else:
                detach(sock)
            raise CheckFailed(
                f"the port group's listeners could not be told apart (canary {found['canary']}, "
                f"stable {found['stable']}): no weighted steering"
            )
        result = Members(tuple(found["canary"]), tuple(found["stable"]))
        attach(sock, weighted_program(0, result.canary, result.stable))
    return result


def set_weight(port: int, members: Members, weight_pct: float) -> None:
    """Send ``weight_pct`` % of new connections to the canary from now on."""
    bp = round(weight_pct * WEIGHT_SCALE / 100.0)
    with group_member("127.0.0.1", port) as sock:
        attach(sock, weighted_program(bp, members.canary, members.stable))


def clear(port: int) -> None:
    """Remove the weighted program: the kernel spreads new connections itself again. Done once
    the canary is gone, so the next deploy's new process is reachable for its readiness."""
    with group_member("127.0.0.1", port) as sock:
        detach(sock)
