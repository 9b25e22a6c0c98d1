"""``dhash review export|import|stats``: offline review round trip on a real SQLite store."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from dhash_rollout.cli import main
from dhash_service.store import schema
from tests.support.review_seed import seed_store

ITEMS = 6


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'dhash.sqlite3'}"
    schema.upgrade(url)
    seed_store(url, ITEMS, candidates=2, pool=3)
    monkeypatch.setenv("DHASH_DATABASE_URL", url)
    yield url


def audit(url: str) -> list[tuple[str, str, str]]:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT actor, action, detail FROM audit_events "
                "WHERE subject_type = 'review_item' ORDER BY id"
            )
        ).all()
    engine.dispose()
    return [(str(a), str(b), json.loads(str(c))["via"]) for a, b, c in rows]


def test_export_fill_in_and_import_decides_through_the_audited_path(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "queue.csv"
    assert main(["review", "export", "--format", "csv", "-o", str(exported)]) == 0
    rows = list(csv.DictReader(io.StringIO(exported.read_text())))
    assert len(rows) == ITEMS and all(r["decision"] == "" for r in rows)
    rows[0]["decision"], rows[1]["decision"] = "confirm", "reject"
    with exported.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    capsys.readouterr()
    assert main(["review", "import", str(exported), "--reviewer", "offline-ann"]) == 0
    assert "applied 2 decision(s) as offline-ann" in capsys.readouterr().out
    assert audit(store) == [
        ("offline-ann", "review_confirm", "import"),
        ("offline-ann", "review_reject", "import"),
    ]
    assert main(["review", "import", str(exported), "--reviewer", "offline-ann"]) == 1
    assert "already confirmed" in capsys.readouterr().err  # a second import decides nothing
    assert main(["review", "stats", "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert sum(r["confirmed"] + r["rejected"] for r in stats["rows"]) == 2
    assert sum(r["pending"] for r in stats["rows"]) == ITEMS - 2
    assert main(["review", "export", "--what", "decisions", "--format", "json"]) == 0
    assert [d["via"] for d in json.loads(capsys.readouterr().out)] == ["import", "import"]


def test_a_bad_file_applies_nothing_and_says_which_rows(
    store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "reviewed.json"
    bad.write_text(
        json.dumps([{"review_id": 1, "decision": "confirm"}, {"review_id": 2, "decision": "yes"}])
    )
    assert main(["review", "import", str(bad), "--reviewer", "ann"]) != 0
    err = capsys.readouterr().err
    assert "row 2: decision must be confirm, reject or blank" in err and "Traceback" not in err
    assert audit(store) == []
    assert main(["review", "import", str(tmp_path / "missing.csv"), "--reviewer", "ann"]) != 0
    assert "cannot read" in capsys.readouterr().err


def test_stats_prints_the_table_the_console_shows(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["review", "stats"]) == 0
    out = capsys.readouterr().out
    assert "thresholds: match <= 4, review <= 10" in out and "suggested" in out
    assert f"0 decided, {ITEMS} pending" in out
