"""A mistyped DHASH_* variable is a usage error naming it (exit 2), never a pydantic traceback.

`dhash serve` crashed with a traceback (exit 1) on `DHASH_MAX_UPLOAD_BYTES=abc`; `dhash hash`
printed pydantic's multi-line dump with the value and a link.
"""

from __future__ import annotations

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
