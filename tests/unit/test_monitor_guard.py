"""Started by hand: which deploy's guard the monitor resumes, and when it only observes."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from dhash_rollout.monitor.guard import OpenDeploy, open_deploy, should_guard
from dhash_rollout.monitor.sources import SampleStore, Scraped
from dhash_rollout.runs.journal import JournalRecord, PhaseState, RunState, Status

SWITCH = datetime(2026, 12, 2, 6, 0, tzinfo=UTC).timestamp()


def _run(
    kind: str = "deploy",
    outcome: Status | None = None,
    monitor: PhaseState | None = PhaseState("started", {}),
    switched: float | None = None,
) -> RunState:
    phases = {"activate": PhaseState("done", {"switched_at": switched} if switched else {})}
    if monitor is not None:
        phases["monitor"] = monitor
    params = {"version": "1.2.0", "from_version": "1.1.0"}
    return RunState("deploy-1", kind, params, phases, outcome)


RECORDS = [JournalRecord("2026-12-02T06:00:00+00:00", "deploy-1", "activate", "done")]
OPEN = OpenDeploy("deploy-1", "1.2.0", "1.1.0", SWITCH)
LATER_END = PhaseState("started", {"monitor.started": {"window_end": SWITCH + 3660}})


@pytest.mark.parametrize(
    ("run", "records", "now", "expected"),
    [
        (_run(), RECORDS, SWITCH + 600, OPEN),  # cut short while watching, inside its window
        (_run(monitor=None), RECORDS, SWITCH + 60, OPEN),  # died between the switch and it
        (_run(switched=SWITCH), [], SWITCH + 60, OPEN),  # the switch time from its detail
        (_run(), RECORDS, SWITCH + 3600, None),  # the window is over: observe only
        (_run(monitor=LATER_END), RECORDS, SWITCH + 3630, OPEN),  # its schedule's own end
        (_run(monitor=LATER_END), RECORDS, SWITCH + 3660, None),
        (_run(outcome="done"), RECORDS, SWITCH + 60, None),  # its guard concluded
        (_run(outcome="failed"), RECORDS, SWITCH + 60, None),  # nothing left to guard
        (_run(monitor=PhaseState("skipped", {})), RECORDS, SWITCH + 60, None),  # --no-monitor
        (_run(kind="rollback"), RECORDS, SWITCH + 60, None),
        (_run(), [], SWITCH + 60, None),  # never switched
        (None, RECORDS, SWITCH + 60, None),
    ],
)
def test_the_last_deploy_is_guarded_only_inside_its_window(
    run: RunState | None, records: list[JournalRecord], now: float, expected: OpenDeploy | None
) -> None:
    assert open_deploy(run, records, now=now, duration_s=3600) == expected


@pytest.mark.parametrize(
    ("deploy", "override", "guard"),
    [
        (OpenDeploy("d", "1", "0", 0.0), None, True),
        (None, None, False),
        (OpenDeploy("d", "1", "0", 0.0), False, False),
        (None, True, True),
    ],
)
def test_rollback_flags_override_the_default(
    deploy: OpenDeploy | None, override: bool | None, guard: bool
) -> None:
    assert should_guard(deploy, override) is guard


def test_kept_samples_survive_a_restart_and_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    store = SampleStore(path)
    key = ("dhash_extractions_total", (("kind", "image"), ("result", "ok")))
    store.add(Scraped(10.0, {key: 3.0}, "1.2.0"))
    store.add(Scraped(40.0, {key: 9.0}, "1.2.0"))
    with path.open("a") as out:
        out.write('{"at": 70.0, "values": [["dhash_ext')  # the crash mid-write
    again = SampleStore(path)
    assert again.series == store.series
