"""The guard a canary's start journals, read back by a promote made without its controller:
the promotion is watched with the start's gates file, source and time scale, not defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dhash_rollout.commands.guard import Guard, MonitorOptions


@pytest.mark.parametrize(
    "guard",
    [
        Guard(MonitorOptions(gates_config=Path("/etc/dhash/gates.json")), 90.0, {"A": "1"}),
        Guard(MonitorOptions("prometheus", "http://127.0.0.1:9090"), 1.0, None),
        Guard(None, 4.0, None),  # --no-monitor: a promotion is not watched
    ],
)
def test_a_journaled_guard_reads_back_as_it_was_started(guard: Guard) -> None:
    again = Guard.from_record(json.loads(json.dumps(guard.to_record())))
    assert again.monitor == guard.monitor and again.time_scale == guard.time_scale
    assert again.release_settings is None  # the candidate already has its settings


def test_a_relative_gates_file_is_journaled_as_the_start_saw_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    record = Guard(MonitorOptions(gates_config=Path("gates.json")), 1.0, None).to_record()
    assert record["monitor"]["gates_config"] == str(tmp_path / "gates.json")


def test_a_run_journaled_without_a_guard_is_watched_with_the_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("DHASH_MONITOR_TIME_SCALE", raising=False)
    assert Guard.from_record(None) == Guard(MonitorOptions(), 1.0, None)
