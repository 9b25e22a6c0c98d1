"""docs/hashing.md describes `dhash hash` as it prints: the JSON keys of items and failures, and
the plain columns. The command had no documentation beyond its --help line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from dhash_rollout.cli import main
from tests.support import corpus

DOC = Path(__file__).resolve().parents[2] / "docs" / "hashing.md"


def cli_section() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("## Command line: `dhash hash`")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_every_json_key_of_an_item_and_a_failure_is_documented(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(corpus.photo_jpeg(96, 64, 1))
    broken = tmp_path / "broken.eps"
    broken.write_bytes(corpus.renamed_eps())
    assert main(["hash", "--json", str(photo), str(broken)]) == 1
    out, err = capsys.readouterr()
    keys = set(json.loads(out.splitlines()[0])) | set(json.loads(err.splitlines()[0]))
    documented = set(re.findall(r"`([a-z_]+)`", cli_section()))
    assert keys <= documented, f"undocumented: {sorted(keys - documented)}"


def test_plain_lines_have_the_documented_six_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(corpus.photo_jpeg(96, 64, 1))
    assert main(["hash", str(photo)]) == 0
    printed = capsys.readouterr().out.splitlines()[0].split("\t")
    example = next(line for line in cli_section().splitlines() if "\t-\t" in line).split("\t")
    assert len(printed) == len(example) == 6
    assert printed[1:5] == ["dhash64", "-", "96", "64"]
