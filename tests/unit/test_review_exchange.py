"""Offline review files: a reviewed export is applied whole or refused with every bad row."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest

from dhash_service.errors import InputError
from dhash_service.review_exchange import (
    QUEUE_FIELDS,
    ImportedDecision,
    as_csv,
    csv_cell,
    export,
    parse_decisions,
    queue_record,
)
from dhash_service.store.console import QueueRow

HEADER = ",".join(QUEUE_FIELDS)


def test_blank_decisions_are_left_out_and_the_rest_kept_with_their_lines() -> None:
    text = (
        f"{HEADER}\n1,10,,5,0.5,review_band,t,s,,confirm\n"
        "2,11,,6,0.4,ambiguous,t,s,,\n3,12,,7,0.3,review_band,t,s,, Reject \n"
    )
    assert parse_decisions(text, "csv") == [
        ImportedDecision(2, 1, "confirm"),
        ImportedDecision(4, 3, "reject"),
    ]


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ("1,maybe", "row 2: decision must be confirm, reject or blank, got 'maybe'"),
        ("x,confirm", "row 2: review_id must be a positive integer, got 'x'"),
        ("0,confirm", "row 2: review_id must be a positive integer, got '0'"),
        ("1,confirm\n1,reject", "row 3: review 1 is decided again (row 2)"),
    ],
)
def test_a_bad_row_refuses_the_whole_file_and_names_the_row(rows: str, problem: str) -> None:
    with pytest.raises(InputError) as caught:
        parse_decisions(f"review_id,decision\n{rows}\n", "csv")
    assert problem in caught.value.message
    assert "nothing was applied" in caught.value.message


def test_json_files_and_their_errors() -> None:
    body = json.dumps([{"review_id": 4, "decision": "confirm"}, {"review_id": 5, "decision": ""}])
    assert parse_decisions(body, "json") == [ImportedDecision(1, 4, "confirm")]
    for bad, message in (("{", "cannot be read"), ('{"a": 1}', "list of objects")):
        with pytest.raises(InputError, match=message):
            parse_decisions(bad, "json")


def test_a_csv_without_the_columns_is_refused() -> None:
    with pytest.raises(InputError, match="review_id and decision"):
        parse_decisions("id,verdict\n1,confirm\n", "csv")


@pytest.mark.parametrize(
    ("value", "cell"),
    [
        ("=HYPERLINK(1)", "'=HYPERLINK(1)"),
        ("+1", "'+1"),
        ("-2", "'-2"),
        ("@x", "'@x"),
        ("ok", "ok"),
        (5, 5),
    ],
)
def test_csv_cells_never_start_a_formula(value: object, cell: object) -> None:
    assert csv_cell(value) == cell


def test_the_queue_export_round_trips_through_import() -> None:
    row = QueueRow(
        7,
        70,
        69,
        6,
        0.45,
        "review_band",
        datetime(2026, 12, 1, tzinfo=UTC),
        "=evil",
        "",
        None,
        None,
    )
    text = "".join(as_csv([queue_record(row)], QUEUE_FIELDS))
    [parsed] = list(csv.DictReader(io.StringIO(text)))
    assert parsed["source"] == "'=evil" and parsed["decision"] == ""
    filled = text.replace(",\n", ",reject\n").replace("review_id,", "review_id,", 1)
    assert parse_decisions(filled, "csv") == [ImportedDecision(2, 7, "reject")]
    assert (
        json.loads("".join(export([queue_record(row)], QUEUE_FIELDS, "json")))[0]["review_id"] == 7
    )
