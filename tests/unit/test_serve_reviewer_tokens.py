"""`dhash serve` refuses malformed reviewer accounts before it starts a worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from dhash_rollout.cli import main


def test_serve_refuses_a_short_reviewer_token_without_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DHASH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DHASH_REVIEWER_TOKENS", "alice:long-enough-token,bob:short")
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "DHASH_REVIEWER_TOKENS: the token of 'bob' must be 8..256 characters" in err
    assert "short" not in err.replace("DHASH_REVIEWER_TOKENS", "")
