"""`dhash gates check|replay` and `dhash monitor` usage errors: exit codes, one line each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dhash_rollout.cli import main

REPO = Path(__file__).resolve().parents[2]
GATES = REPO / "quality-gates-config.json"


def test_gates_check_accepts_the_checkouts_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gates", "check", "--config", str(GATES)]) == 0
    assert "OK (canary, production, staging; 60 min window)" in capsys.readouterr().out


def test_gates_check_prints_one_line_per_mistake(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = json.loads(GATES.read_text())
    data["environments"]["production"]["p95HashTime"]["timeWindow"] = -1
    data["environments"]["staging"]["queue"] = {"threshold": 1}
    bad = tmp_path / "gates.json"
    bad.write_text(json.dumps(data))
    assert main(["gates", "check", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{bad}: environments.production.p95HashTime: timeWindow must be > 0 minutes, got -1",
        f"{bad}: environments.staging.queue: unknown gate",
    ]


def _ledger(tmp_path: Path, values: list[float]) -> Path:
    rows: list[dict[str, object]] = [
        {
            "kind": "start",
            "run_id": "r",
            "environment": "production",
            "window_start": 0.0,
            "duration_s": 3600.0,
            "time_scale": 1.0,
        }
    ]
    for n, v in enumerate(values, start=1):
        ev = {
            "gate": "p95HashTime",
            "at": 30.0 * n,
            "raw": v,
            "samples": 50,
            "window_s": 900,
            "status": "ok",
            "detail": "",
        }
        rows.append({"kind": "poll", "offset": 30.0 * n, "at": 30.0 * n, "evaluations": [ev]})
    path = tmp_path / "ledger.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_replay_says_when_a_tighter_threshold_would_have_fired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = _ledger(tmp_path, [900, 1200, 1300, 1250, 800])
    tighter = json.loads(GATES.read_text())
    tighter["environments"]["production"]["p95HashTime"].update(threshold=1100, warn=1000)
    other = tmp_path / "tight.json"
    other.write_text(json.dumps(tighter))
    assert main(["gates", "replay", str(ledger), "--config", str(GATES)]) == 0
    assert "p95HashTime: would not fire" in capsys.readouterr().out
    assert main(["gates", "replay", str(ledger), "--config", str(other)]) == 0
    out = capsys.readouterr().out
    assert "p95HashTime: would fire at poll 3 (t+90s): 1300 > 1100" in out


def test_replay_of_a_file_that_is_not_a_ledger_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    assert main(["gates", "replay", str(junk), "--config", str(GATES)]) == 2
    assert "not a monitor ledger" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "graphite"], "--source must be scrape or prometheus"),
        (["--source", "prometheus"], "--source prometheus needs --prometheus-url"),
        (["--config", "missing.json"], "cannot read"),
    ],
)
def test_monitor_usage_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", "--env", "production", *args]) == 2
    assert message in capsys.readouterr().err
