"""A mistyped DHASH_* variable is a usage error naming it (exit 2), never a pydantic traceback.

`dhash serve` crashed with a traceback (exit 1) on `DHASH_MAX_UPLOAD_BYTES=abc`; `dhash hash`
printed pydantic's multi-line dump with the value and a link.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.cli import main
from dhash_service.config import load_settings
from dhash_service.errors import ConfigError


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["hash", "unused.jpg"]])
def test_a_mistyped_setting_is_a_usage_error_naming_the_variable(
    command: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DHASH_MAX_UPLOAD_BYTES", "lots")
    monkeypatch.setenv("DHASH_MAX_INPUT_BYTES", "lots")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.startswith("dhash: error: invalid settings: DHASH_MAX_")
    assert "Traceback" not in err and "pydantic.dev" not in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "command",
    [
        ["backup", "list"],
        ["notify", "--type", "info", "--env", "staging", "--message", "m", "--dry-run"],
        ["deploy", "--env", "staging", "--dry-run"],
    ],
)
def test_any_command_reading_mistyped_settings_says_so_in_one_line(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DHASH_MAX_UPLOAD_BYTES", "lots")
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("dhash: error: invalid settings: DHASH_MAX_UPLOAD_BYTES")
    assert "Traceback" not in err and "lots" not in err


def test_the_error_names_every_bad_variable_but_not_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DHASH_PORT", "s3cret-looking")
    monkeypatch.setenv("DHASH_INDEX_KIND", "faiss")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "DHASH_PORT: " in caught.value.message
    assert "DHASH_INDEX_KIND: " in caught.value.message
    assert "s3cret-looking" not in caught.value.message


def test_a_config_file_that_does_not_exist_is_refused_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHASH_CONFIG_FILE", str(tmp_path / "dhash.tmol"))
    with pytest.raises(ConfigError, match="is not a file"):
        load_settings()


def test_a_config_file_that_is_not_toml_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "dhash.toml"
    config.write_text("max_input_bytes = \n", encoding="utf-8")
    monkeypatch.setenv("DHASH_CONFIG_FILE", str(config))
    assert main(["hash", "unused.jpg"]) == 2
    err = capsys.readouterr().err
    assert "is not valid TOML" in err and "Traceback" not in err


def test_a_mistyped_value_in_the_config_file_names_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "dhash.toml"
    config.write_text('max_input_bytes = "lots"\n', encoding="utf-8")
    monkeypatch.setenv("DHASH_CONFIG_FILE", str(config))
    with pytest.raises(ConfigError, match=r"DHASH_MAX_INPUT_BYTES \(or max_input_bytes in "):
        load_settings()
    config.write_text("max_input_bytes = 1000\n", encoding="utf-8")
    assert load_settings().max_input_bytes == 1000


def test_serve_refuses_a_token_too_short_to_redact_without_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A one-letter token was redacted as literal text: every "t" in every log line.
    monkeypatch.setenv("DHASH_DATA_DIR", str(tmp_path))  # nothing lands in the checkout if it ran
    monkeypatch.setenv("DHASH_API_TOKENS", "long-enough-token,t")
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "DHASH_API_TOKENS: 1 of 2 tokens are shorter than 8 characters" in err
    assert "long-enough-token" not in err


@pytest.mark.parametrize(
    "variable", ["DHASH_API_READ_TOKENS", "DHASH_API_WRITE_TOKENS", "DHASH_API_REVIEW_TOKENS"]
)
def test_serve_refuses_a_short_scoped_token_naming_its_setting(
    variable: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The scoped tokens are redacted the same way, so a short one mangles the logs just as much.
    monkeypatch.setenv("DHASH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DHASH_API_TOKENS", "long-enough-token")
    monkeypatch.setenv(variable, "scoped-long-token,abc")
    served: list[object] = []  # had the check missed it, serve would return here, not run on
    monkeypatch.setattr("dhash_service.server.serve", lambda *a, **k: served.append(a))
    assert main(["serve", "--port", "0"]) == 2
    assert served == []
    err = capsys.readouterr().err
    assert f"{variable}: 1 of 2 tokens are shorter than 8 characters" in err
    assert "DHASH_API_TOKENS:" not in err  # only the setting that holds the short one is named
    assert "scoped-long-token" not in err and "abc" not in err
