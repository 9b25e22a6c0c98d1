"""Fleet deploy time for 1, 3 and 6 hosts, and the time from a breach to every touched host
back on the old release.

Each size gets its own namespace fleet (tests/support/fleet_site.py: real sshd per host, real
HAProxy, the real wave executor, HAProxy client and pyinfra connector; the release payload is a
directory switched by symlink, not a dhash release, so these are the orchestration's costs:
drain, engine steps over SSH, health check, ready). Per size, interleaved repetitions of:

- anchor: one host per wave (``sizes = [1]``: Ansible's ``serial: 1``), parallel 1;
- waves: ``[1, "25%", "100%"]`` with parallel = the wave's size;
- breach: a bad release on ``[1, "100%"]``; from the first host's FAILED record (the breach)
  to the last ROLLED_BACK record (all touched hosts back in service on the old release).

Medians over the repetitions, the waves / anchor ratio, and how the time grows with hosts.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.fleet_site import Site, fleet_site, served  # noqa: E402
from tests.support.netns_hosts import available  # noqa: E402

from dhash_rollout.deploy.fleet import WaveExecutor  # noqa: E402
from dhash_rollout.deploy.waves import plan_waves  # noqa: E402

SIZES = (1, 3, 6)
REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 3


def deploy(site: Site, version: str, sizes: list[int | str], parallel: int) -> dict[str, Any]:
    site.hosts.parallel = parallel
    marks: list[tuple[float, str, Mapping[str, Any]]] = []

    def record(phase: str, status: str, detail: Mapping[str, Any]) -> None:
        marks.append((time.monotonic(), phase, dict(detail)))

    plan = plan_waves(list(site.hosts.hosts), sizes, 0)
    executor = WaveExecutor(site.hosts, record, version, previous=served(site))
    began = time.monotonic()
    outcome = executor.run(plan)
    took = time.monotonic() - began
    result: dict[str, Any] = {"ok": outcome.ok, "seconds": took, "waves": len(plan.waves)}
    failed = [t for t, _, d in marks if d["state"] == "failed"]
    back = [t for t, _, d in marks if d["state"] == "rolled_back"]
    if failed and back:
        result["breach_to_back"] = max(back) - min(failed)
    return result


def main() -> None:
    reason = available()
    if reason:
        sys.exit(f"bench-fleet needs namespace hosts: {reason}")
    rows = []
    for n in SIZES:
        names = [f"web{i + 1}" for i in range(n)]
        with tempfile.TemporaryDirectory() as tmp, fleet_site(Path(tmp), names) as site:
            anchor, waves, breach = [], [], []
            current = "v1"
            for _ in range(REPEATS):
                target = "v2" if current == "v1" else "v1"
                a = deploy(site, target, [1], 1)
                assert a["ok"], a
                anchor.append(a["seconds"])
                current = target
                target = "v2" if current == "v1" else "v1"
                w = deploy(site, target, [1, "25%", "100%"], n)
                assert w["ok"], w
                waves.append(w["seconds"])
                current = target
                b = deploy(site, "v3", [1, "100%"], n)
                assert not b["ok"] and "breach_to_back" in b, b
                breach.append(b["breach_to_back"])
            rows.append(
                (n, statistics.median(anchor), statistics.median(waves), statistics.median(breach),
                 w["waves"])
            )  # fmt: skip
            print(f"{n} hosts: anchor {anchor}, waves {waves}, breach {breach}", flush=True)
    print()
    print("| hosts | waves | serial: 1 (anchor) s | waves, parallel s | waves / anchor | "
          "breach -> touched back s |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|")
    for n, a, w, b, k in rows:
        print(f"| {n} | {k} | {a:.2f} | {w:.2f} | {w / a:.2f} | {b:.2f} |")
    base = rows[0]
    for n, a, w, _, _ in rows[1:]:
        print(f"{n} hosts vs 1: anchor x{a / base[1]:.2f}, waves x{w / base[2]:.2f}")


if __name__ == "__main__":
    main()
