"""``dhash hash``: one line per item, errors per file on stderr, non-zero exit on any failure."""

from __future__ import annotations

import io
import json
from pathlib import Path

import imagehash
import pytest
from PIL import Image

from dhash_rollout.cli import main
from tests.support import corpus


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {
        "photo": tmp_path / "photo.jpg",
        "archive": tmp_path / "album.zip",
        "eps": tmp_path / "renamed.jpg",
    }
    paths["photo"].write_bytes(corpus.photo_jpeg(320, 240, 1))
    paths["archive"].write_bytes(
        corpus.zip_of(
            [("a/one.png", corpus.png_with_alpha(64, 48, 2)), ("bad.jpg", b"\xff\xd8\xff\xe0junk")]
        )
    )
    paths["eps"].write_bytes(corpus.renamed_eps())
    return paths


def test_plain_output_has_hash_algorithm_locator_size_and_path(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hash", str(files["photo"])]) == 0
    expected = str(imagehash.dhash(Image.open(files["photo"])))
    assert capsys.readouterr().out.splitlines() == [
        f"{expected}\tdhash64\t-\t320\t240\t{files['photo']}"
    ]


def test_json_lines_carry_path_hash_and_algorithm(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hash", "--json", "--algo", "dhash64-fast", str(files["photo"])]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    record = json.loads(line)
    assert record["path"] == str(files["photo"])
    assert record["algorithm"] == "dhash64-fast"
    assert len(record["hash"]) == 16
    assert (record["width"], record["height"], record["locator"]) == (320, 240, "")


def test_failures_go_to_stderr_per_file_and_the_rest_still_prints(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.png"
    code = main(
        ["hash", str(files["eps"]), str(missing), str(files["archive"]), str(files["photo"])]
    )
    assert code == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split("\t")[2] for line in lines] == ["a/one.png", "-"]
    assert f"{files['eps']}: unsupported format (PostScript/EPS)" in captured.err
    assert f"{missing}: cannot read file" in captured.err
    assert f"{files['archive']}!bad.jpg:" in captured.err
    assert "Traceback" not in captured.err


def test_json_errors_are_json_on_stderr(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["hash", "--json", str(files["eps"])]) == 1
    record = json.loads(capsys.readouterr().err.strip())
    assert record["error"] == "unsupported_format"
    assert record["path"] == str(files["eps"])


def test_files_over_the_input_limit_are_not_read(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DHASH_MAX_INPUT_BYTES", "100")
    assert main(["hash", str(files["photo"])]) == 1
    assert "the limit is 100" in capsys.readouterr().err


def test_unknown_algorithm_is_a_usage_error(files: dict[str, Path]) -> None:
    assert main(["hash", "--algo", "md5", str(files["photo"])]) == 2


def test_algorithm_defaults_to_the_setting(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DHASH_HASH_ALGORITHM", "dhash256")
    monkeypatch.setenv("DHASH_HASH_SIZE", "16")
    assert main(["hash", str(files["photo"])]) == 0
    fields = capsys.readouterr().out.split("\t")
    assert fields[1] == "dhash256"
    expected = imagehash.dhash(Image.open(io.BytesIO(files["photo"].read_bytes())), hash_size=16)
    assert fields[0] == str(expected)


def test_mismatched_size_setting_is_a_config_error(
    files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DHASH_HASH_SIZE", "16")
    assert main(["hash", str(files["photo"])]) == 2
