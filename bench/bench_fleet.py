"""Fleet deploy time for 1, 3 and 6 hosts, and the time from a breach to every touched host
back on the old release, with the real payload: dhash releases on every host.

Each size gets its own fleet (tests/support/dhash_fleet.py: namespace hosts, each a real sshd,
its own release root and supervisord, behind a real HAProxy health-checking ``/ready``; every
host serves a real dhash release installed from this checkout's wheel through pyinfra and the
host agent; one shared PostgreSQL database, through its unix socket). Releases 1.1.0
(serving), 1.2.0 (good) and 1.3.0 (bad: its ``/health`` fails, the monitor issue's fault
setting) are installed on every host first (the install is timed once per size); then, per
size, interleaved repetitions of:

- anchor: one host per wave (``sizes = [1]``: Ansible's ``serial: 1``), parallel 1;
- waves: ``[1, "25%", "100%"]`` with parallel = the wave's size;
- breach: the bad release on ``[1, "100%"]``; from the first host's FAILED record (the breach)
  to the last ROLLED_BACK record (all touched hosts back in service on the old release);
- restore: ``dhash deploy`` (the CLI, ``--no-monitor``) of 1.4.0, whose expand migration cannot
  be downgraded, to the whole fleet, then ``dhash rollback``: it must restore the shared
  database (every host drained and stopped, the deploy's backup restored once, every host
  switched back, checked, put back; rollback/fleet.py). Timed: the command, and from its
  journal the outage (the export's start, when the hosts stop, to the last host back) and its
  phases.

A switch is the host's blue/green: the new release's slot started under supervisord, checked,
the old one stopped. Medians over the repetitions, the waves / anchor ratio, and how the time
grows with hosts; the load average at the start and end of each size (the machine is shared).
``bench/bench_fleet.py [REPEATS]`` (default 3).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.dhash_fleet import ENV, DhashSite, dhash_fleet_site  # noqa: E402
from tests.support.netns_hosts import available  # noqa: E402
from tests.support.postgres import running_postgres  # noqa: E402
from tests.support.release_builds import dhash_bin, wheel_for  # noqa: E402

from dhash_rollout.deploy.fleet import WaveExecutor  # noqa: E402
from dhash_rollout.deploy.waves import plan_waves  # noqa: E402
from dhash_rollout.runs.journal import Journal, JournalRecord  # noqa: E402

SIZES = (1, 3, 6)
REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
BAD = {"DHASH_FAULT_HEALTH_FAILING": "true"}


def install(site: DhashSite, wheel: Path, settings: Mapping[str, str] | None = None) -> float:
    hosts = site.settings()
    began = time.monotonic()
    failed = site.payload.install(
        hosts, wheel, known_hosts=site.known_hosts, settings=settings, parallel=len(hosts)
    )
    assert not any(failed.values()), failed
    return time.monotonic() - began


def deploy(site: DhashSite, version: str, sizes: list[int | str], parallel: int) -> dict[str, Any]:
    site.hosts.parallel = parallel
    marks: list[tuple[float, str, Mapping[str, Any]]] = []

    def record(phase: str, status: str, detail: Mapping[str, Any]) -> None:
        marks.append((time.monotonic(), phase, dict(detail)))

    plan = plan_waves(list(site.hosts.hosts), sizes, 0)
    executor = WaveExecutor(site.hosts, record, version, previous=site.served())
    began = time.monotonic()
    outcome = executor.run(plan)
    took = time.monotonic() - began
    result: dict[str, Any] = {"ok": outcome.ok, "seconds": took, "waves": len(plan.waves)}
    failed = [t for t, _, d in marks if d.get("state") == "failed"]
    back = [t for t, _, d in marks if d.get("state") == "rolled_back"]
    if failed and back:
        result["breach_to_back"] = max(back) - min(failed)
    return result


def dhash(site: DhashSite, *args: str) -> dict[str, Any]:
    """One ``dhash`` command against the fleet's environments file; its ``--json`` answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    env["DHASH_ENVIRONMENTS_FILE"] = str(site.base / "dhash-environments.toml")
    done = subprocess.run(
        [dhash_bin(), *args, "--json"], cwd=site.base, env=env, text=True, capture_output=True,
        timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def _stamp(record: JournalRecord) -> float:
    return datetime.fromisoformat(record.ts).timestamp()


def restoring_rollback(site: DhashSite, wheel: Path) -> dict[str, float]:
    """Deploy the irreversible release to every host, then the rollback that must restore."""
    began = time.monotonic()
    deployed = dhash(site, "deploy", "--env", ENV, "--source", str(wheel), "--no-monitor")
    assert deployed["ok"], deployed
    deploy_s = time.monotonic() - began
    began = time.monotonic()
    rolled = dhash(site, "rollback", "--env", ENV, "--reason", "bench-fleet restore")
    took = time.monotonic() - began
    assert rolled["ok"] and rolled["phases"]["restore"], rolled
    records = [r for r in Journal.for_root(site.env.root).records()
               if r.deploy_id == rolled["run_id"]]  # fmt: skip

    def at(phase: str, status: str) -> float:
        return next(_stamp(r) for r in records if r.phase == phase and r.status == status)

    return {
        "deploy": deploy_s,
        "rollback": took,
        "outage": at("activate", "done") - at("export_writes", "started"),
        "stop_export": at("export_writes", "done") - at("export_writes", "started"),
        "restore": at("reapply_writes", "done") - at("restore", "started"),
        "bring_back": at("activate", "done") - at("activate", "started"),
    }


Row = tuple[int, float, float, float, int, float, dict[str, float], str]


def _load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def one_size(n: int, wheels: Mapping[str, Path], database_url: str) -> Row:
    """A fresh fleet of ``n`` hosts on its own database: the install of 1.2.0 (timed) and
    1.3.0, then the interleaved repetitions."""
    names = [f"web{i + 1}" for i in range(n)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        dhash_fleet_site(Path(tmp), names, wheels["1.1.0"], database_url) as site,
    ):
        load_before = _load()
        installed = install(site, wheels["1.2.0"])
        install(site, wheels["1.3.0"], BAD)
        anchor, waves, breach = [], [], []
        restores: list[dict[str, float]] = []
        current = "1.1.0"
        for _ in range(REPEATS):
            target = "1.2.0" if current == "1.1.0" else "1.1.0"
            a = deploy(site, target, [1], 1)
            assert a["ok"], a
            anchor.append(a["seconds"])
            current = target
            target = "1.2.0" if current == "1.1.0" else "1.1.0"
            w = deploy(site, target, [1, "25%", "100%"], n)
            assert w["ok"], w
            waves.append(w["seconds"])
            current = target
            b = deploy(site, "1.3.0", [1, "100%"], n)
            assert not b["ok"] and "breach_to_back" in b, b
            breach.append(b["breach_to_back"])
            restores.append(restoring_rollback(site, wheels["1.4.0"]))  # back on ``current``
        loads = f"{load_before} -> {_load()}"
        print(
            f"{n} hosts (load {loads}): install {installed:.2f}, anchor {anchor}, waves {waves}, "
            f"breach {breach}, restoring rollback {restores}",
            flush=True,
        )
        medians = {k: statistics.median(r[k] for r in restores) for k in restores[0]}
        return (
            n, statistics.median(anchor), statistics.median(waves), statistics.median(breach),
            w["waves"], installed, medians, loads,
        )  # fmt: skip


def main() -> None:
    reason = available()
    if reason:
        sys.exit(f"bench-fleet needs namespace hosts: {reason}")
    wheels = {v: wheel_for(v) for v in ("1.1.0", "1.2.0", "1.3.0")}
    wheels["1.4.0"] = wheel_for("1.4.0", "irreversible")
    rows = []
    print(f"bench-fleet: {REPEATS} repetitions per size, load {_load()}", flush=True)
    with running_postgres() as server:
        for n in SIZES:
            rows.append(one_size(n, wheels, server.socket_url(server.create_database("bench"))))
    print()
    print(
        "| hosts | waves | install s | serial: 1 (anchor) s | waves, parallel s | waves / anchor "
        "| breach -> touched back s | load (1/5/15 min) before -> after |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for n, a, w, b, k, i, _r, loads in rows:
        print(f"| {n} | {k} | {i:.2f} | {a:.2f} | {w:.2f} | {w / a:.2f} | {b:.2f} | {loads} |")
    print()
    print("| hosts | deploy 1.4.0 s | restoring rollback s | outage s | stop + export s | "
          "restore + re-apply s | hosts back s | rollback / anchor |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, a, _w, _b, _k, _i, r, _loads in rows:
        print(
            f"| {n} | {r['deploy']:.2f} | {r['rollback']:.2f} | {r['outage']:.2f} | "
            f"{r['stop_export']:.2f} | {r['restore']:.2f} | {r['bring_back']:.2f} | "
            f"{r['rollback'] / a:.2f} |"
        )
    base = rows[0]
    for n, a, w, _, _, _, r, _ in rows[1:]:
        print(
            f"{n} hosts vs 1: anchor x{a / base[1]:.2f}, waves x{w / base[2]:.2f}, "
            f"restoring rollback x{r['rollback'] / base[6]['rollback']:.2f}, "
            f"outage x{r['outage'] / base[6]['outage']:.2f}"
        )


if __name__ == "__main__":
    main()
