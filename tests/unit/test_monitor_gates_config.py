"""quality-gates-config.json: the checkout's file loads; each mistake is one clear line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dhash_rollout.monitor.gates_config import (
    GateName,
    GatesConfigError,
    load_gates_config,
    parse_gates_config,
)

REPO = Path(__file__).resolve().parents[2]
FILE = REPO / "quality-gates-config.json"


def base() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(FILE.read_text(encoding="utf-8"))
    return data


def test_the_checkouts_file_has_the_guides_gates() -> None:
    config = load_gates_config(FILE, environment="production")
    production = config.environments["production"]
    assert [name for name, _ in production.items()] == list(GateName)
    assert production.gate(GateName.P95_HASH_TIME).threshold == 2000
    assert production.gate(GateName.EXTRACTION_FAILURE_RATE).time_window == 10
    assert config.monitoring.consecutive_error_limit == 4


def _edit(path: list[str], value: object) -> dict[str, Any]:
    data = base()
    node = data
    for key in path[:-1]:
        node = node[key]
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return data


P = ["environments", "production"]
E = "environments.production"


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (_edit([*P, "latency"], {"threshold": 1}), f"{E}.latency: unknown gate"),
        (_edit([*P, "p95HashTime", "colour"], 1), f"{E}.p95HashTime.colour: unknown key"),
        (_edit([*P, "p95HashTime", "timeWindow"], 0),
         f"{E}.p95HashTime: timeWindow must be > 0 minutes, got 0"),
        (_edit([*P, "p95HashTime", "timeWindow"], -5),
         f"{E}.p95HashTime: timeWindow must be > 0 minutes, got -5"),
        (_edit([*P, "extractionFailureRate", "warn"], 7.5),
         f"{E}.extractionFailureRate: warn 7.5 is above threshold 5"),
        (_edit([*P, "extractionFailureRate", "noData"], "pass"),
         f"{E}.extractionFailureRate.noData: Input should be 'fail', 'inconclusive' or 'ignore'"),
        (_edit(["monitoring", "durationMinutes"], 0),
         "monitoring.durationMinutes: Input should be greater than 0"),
        (_edit(["monitoring", "speed"], 2), "monitoring.speed: unknown key"),
    ],
)  # fmt: skip
def test_each_mistake_is_one_clear_line(data: dict[str, Any], line: str) -> None:
    with pytest.raises(GatesConfigError) as caught:
        parse_gates_config(json.dumps(data), Path("gates.json"))
    assert caught.value.lines == [line]


def test_a_missing_environment_is_named(tmp_path: Path) -> None:
    path = tmp_path / "gates.json"
    data = base()
    del data["environments"]["canary"]
    path.write_text(json.dumps(data))
    with pytest.raises(GatesConfigError) as caught:
        load_gates_config(path, environment="canary")
    assert caught.value.lines == ["environments.canary: missing (the file has production, staging)"]


@pytest.mark.parametrize(
    ("text", "line"),
    [("{", "not JSON: Expecting property name enclosed in double quotes at line 1")],
)
def test_a_file_that_is_not_json_is_one_line(text: str, line: str) -> None:
    with pytest.raises(GatesConfigError) as caught:
        parse_gates_config(text, Path("gates.json"))
    assert caught.value.lines == [line]
