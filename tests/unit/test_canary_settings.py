"""The canary's settings and files: the environment's canary table, the judge settings kept in
the state (so status replays the same judgement), and the poll ledger."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dhash_rollout.canary.controller import (
    CanaryState,
    config_of,
    config_to_json,
    poll_from_json,
    poll_to_json,
    read_ledger,
)
from dhash_rollout.canary.judge import JudgeConfig, Poll, ReleasePoll, Step
from dhash_rollout.canary.quantiles import Histogram
from dhash_rollout.cli import main
from dhash_rollout.environments import load_environment
from dhash_service.errors import CheckFailed


def _env_file(tmp: Path, canary: str = "") -> Path:
    path = tmp / "dhash-environments.toml"
    path.write_text(f'[production]\nroot = "{tmp / "var"}"\n{canary}', encoding="utf-8")
    return path


def _poll(at: float) -> Poll:
    h = Histogram((0.01, 0.1), (3, 1, 0))
    return Poll(at, ReleasePoll(4, 1, h, True), ReleasePoll(4, 0, h, None))


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("canary = { weight_pct = 5 }\n", "unknown canary setting(s) weight_pct"),
        ('canary = { alpha = "low" }\n', "canary setting alpha must be a number"),
        ('canary = { steps = "5,abc" }\n', "canary steps '5,abc'"),
        ('canary = { steps = "5,120" }\n', "percentage"),
    ],
)
def test_a_bad_canary_table_is_a_usage_error_naming_the_key(
    table: str,
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DHASH_ENVIRONMENTS_FILE", str(_env_file(tmp_path, table)))
    assert main(["canary", "start", "--env", "production", "--version", "9.9.9"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_status_without_a_canary_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DHASH_ENVIRONMENTS_FILE", str(_env_file(tmp_path)))
    assert main(["canary", "status", "--env", "production"]) == 0
    assert capsys.readouterr().out.strip() == "no canary in production"


def test_the_judge_settings_survive_the_state_file() -> None:
    config = JudgeConfig(steps=(Step(10, 60.0), Step(40, 90.0)), alpha=0.01, min_samples=25)
    state = CanaryState(
        "2.0.0", "1.0.0", "dhash-green", 1, 2, {"canary": [1], "stable": [0]}, 10.0,
        "running", 0.0, config=config_to_json(config),
    )  # fmt: skip
    again = CanaryState(**json.loads(json.dumps(state.__dict__)))
    assert config_of(again) == config


def test_polls_round_trip_and_a_cut_last_line_is_dropped(tmp_path: Path) -> None:
    env = load_environment("production", tmp_path) if _env_file(tmp_path) else None
    assert env is not None
    polls = [_poll(1.0), _poll(2.0)]
    assert [poll_from_json(poll_to_json(p)) for p in polls] == polls
    ledger = env.root / "canary" / "ledger.jsonl"
    ledger.parent.mkdir(parents=True)
    lines = [json.dumps(poll_to_json(p)) for p in polls]
    ledger.write_text("\n".join(lines) + '\n{"at": 3.0, "canary"', encoding="utf-8")
    assert read_ledger(env) == polls  # a crash cut the last line short: the rest stands
    ledger.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n", encoding="utf-8")
    with pytest.raises(CheckFailed, match="line 2"):
        read_ledger(env)


def test_the_canary_gates_of_the_quality_gates_file_set_the_judges_thresholds(
    tmp_path: Path,
) -> None:
    from dhash_rollout.commands.canary import _config, canary_gates
    from tests.support.release_builds import CHECKOUT

    data = json.loads((CHECKOUT / "quality-gates-config.json").read_text(encoding="utf-8"))
    gates = data["environments"]["canary"]
    gates["extractionFailureRate"].update(threshold=7.5, minSamples=4)
    gates["p95HashTime"].update(threshold=900, warn=800)
    gates["healthFailures"]["threshold"] = 3
    path = tmp_path / "gates.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    config = _config("5,50", 60.0, 1.0, alpha=0.05, min_samples=None, gates=canary_gates(path))
    assert (config.failure_rate_threshold_pct, config.p95_threshold_ms) == (7.5, 900)
    assert (config.health_threshold, config.min_samples) == (3, 4)
    # the environment's canary table's min_samples wins over the gate's minSamples
    assert (
        _config("5", 60.0, 1.0, alpha=0.05, min_samples=25, gates=canary_gates(path)).min_samples
        == 25
    )
    # kept in the state, so status replays with the same thresholds
    state = CanaryState(
        "2.0.0", "1.0.0", "dhash-green", 1, 2, {"canary": [1], "stable": [0]}, 5.0,
        "running", 0.0, config=config_to_json(config),
    )  # fmt: skip
    assert config_of(CanaryState(**json.loads(json.dumps(state.__dict__)))) == config


def test_a_gates_file_without_canary_gates_leaves_the_defaults_and_a_bad_one_is_refused(
    tmp_path: Path,
) -> None:
    from dhash_rollout.commands.canary import canary_gates
    from dhash_service.errors import ConfigError
    from tests.support.release_builds import CHECKOUT

    data = json.loads((CHECKOUT / "quality-gates-config.json").read_text(encoding="utf-8"))
    del data["environments"]["canary"]
    path = tmp_path / "gates.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert canary_gates(path) == {}
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match="not JSON"):
        canary_gates(path)
