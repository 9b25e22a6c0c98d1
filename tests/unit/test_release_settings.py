"""``--release-setting KEY=VALUE``: what a release may carry for itself, refused otherwise with
one clear line before anything happens."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.releases import (
    Release,
    parse_release_settings,
    read_release_settings,
    write_release_settings,
)
from dhash_service.errors import ConfigError


@pytest.mark.parametrize(
    ("pairs", "env", "expected"),
    [
        (["DHASH_FAULT_HASH_LATENCY_SECONDS=0.4"], "staging",
         {"DHASH_FAULT_HASH_LATENCY_SECONDS": "0.4"}),
        (["fault_low_confidence=true", "DHASH_FAULT_ALLOW_PRODUCTION=true"], "production",
         {"DHASH_FAULT_ALLOW_PRODUCTION": "true", "DHASH_FAULT_LOW_CONFIDENCE": "true"}),
        (["DHASH_MAX_ITEMS=10", "DHASH_MAX_ITEMS=20"], "staging", {"DHASH_MAX_ITEMS": "20"}),
    ],
)  # fmt: skip
def test_a_release_setting_becomes_the_variable_its_processes_get(
    pairs: list[str], env: str, expected: dict[str, str]
) -> None:
    assert parse_release_settings(pairs, env) == expected


@pytest.mark.parametrize(
    ("pairs", "env", "message"),
    [
        (["novalue"], "staging", "expected KEY=VALUE"),
        (["=1"], "staging", "expected KEY=VALUE"),
        (["DHASH_NOPE=1"], "staging", "not a setting of the service"),
        (["DHASH_NOTIFY_MAX_ATTEMPTS=3"], "staging", "not a setting of the service"),
        (["DHASH_PORT=1"], "staging", "set by the environment"),
        (["DHASH_DATABASE_URL=sqlite://"], "staging", "set by the environment"),
        (["DHASH_API_TOKENS=x"], "staging", "set by the environment"),
        (["DHASH_FAULT_HASH_LATENCY_SECONDS=slow"], "staging", "valid number"),
        (["DHASH_FAULT_EXTRACTION_FAILURE_SHARE=2"], "staging", "less than or equal to 1"),
        (["DHASH_FAULT_HEALTH_FAILING=true"], "production", "refused in production"),
    ],
)
def test_a_bad_release_setting_is_refused_naming_it(
    pairs: list[str], env: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_release_settings(pairs, env)


def _release(tmp: Path) -> Release:
    return Release("2.0.0", tmp, "wheel", "x.whl", "0" * 64, "2026-12-02T00:00:00+00:00", "shared")


def test_settings_are_written_replaced_and_removed(tmp_path: Path) -> None:
    release = _release(tmp_path)
    assert read_release_settings(release) == {}
    write_release_settings(release, {"DHASH_FAULT_LOW_CONFIDENCE": "true"})
    assert read_release_settings(release) == {"DHASH_FAULT_LOW_CONFIDENCE": "true"}
    write_release_settings(release, {"DHASH_MAX_ITEMS": "5"})
    assert read_release_settings(release) == {"DHASH_MAX_ITEMS": "5"}
    write_release_settings(release, {})
    assert not (tmp_path / "settings.json").exists()


@pytest.mark.parametrize("text", ["[1]", '{"PORT": "1"}', '{"DHASH_X": 1}', "{not json"])
def test_a_damaged_settings_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "settings.json").write_text(text)
    with pytest.raises(ConfigError, match=r"settings\.json"):
        read_release_settings(_release(tmp_path))
