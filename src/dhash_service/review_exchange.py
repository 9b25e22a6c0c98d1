"""Review data in and out as CSV and JSON: the decisions log, the queue for offline review, and
a reviewed file coming back.

Pure apart from the iterators it is handed: no store, no files. Offline review is a round trip:
``dhash review export`` writes the pending queue with an empty ``decision`` column, a person
fills in ``confirm`` or ``reject`` (blank: not decided), and ``dhash review import`` applies the
file through the audited use case. A file is checked whole before anything is applied, and
every problem is reported with its row, so a bad file changes nothing.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, cast

from dhash_service.errors import InputError
from dhash_service.store.console import DecisionRow, QueueRow

Format = Literal["csv", "json"]
DECISION_FIELDS = (
    "event_id",
    "at",
    "reviewer",
    "action",
    "review_id",
    "via",
    "image_id",
    "candidate_image_id",
    "distance",
    "reason",
)
QUEUE_FIELDS = (
    "review_id",
    "image_id",
    "candidate_image_id",
    "distance",
    "confidence",
    "reason",
    "created_at",
    "source",
    "locator",
    "decision",
)
MAX_IMPORT_ROWS = 100_000
MAX_PROBLEMS_SHOWN = 20


def csv_cell(value: Any) -> Any:
    """A spreadsheet must not run a cell as a formula (CSV injection, OWASP): text starting with
    ``= + - @`` or a control character gets a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def decision_record(row: DecisionRow) -> dict[str, Any]:
    return {
        "event_id": row.event_id,
        "at": row.at.isoformat(),
        "reviewer": row.reviewer,
        "action": row.action,
        "review_id": row.review_id,
        "via": row.via,
        "image_id": row.image_id,
        "candidate_image_id": row.candidate_image_id,
        "distance": row.distance,
        "reason": row.reason,
    }


def queue_record(row: QueueRow) -> dict[str, Any]:
    return {
        "review_id": row.id,
        "image_id": row.image_id,
        "candidate_image_id": row.candidate_image_id,
        "distance": row.distance,
        "confidence": round(row.confidence, 4),
        "reason": row.reason,
        "created_at": row.created_at.isoformat(),
        "source": row.source,
        "locator": row.locator,
        "decision": "",
    }


def as_csv(records: Iterable[dict[str, Any]], fields: tuple[str, ...]) -> Iterator[str]:
    """CSV text in chunks of about 64 KiB (exports of any size stream)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for record in records:
        writer.writerow({k: csv_cell(v) for k, v in record.items()})
        if out.tell() > 64 * 1024:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def as_json(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A JSON array, one element per chunk."""
    yield "["
    for index, record in enumerate(records):
        yield ("," if index else "") + json.dumps(record)
    yield "]\n"


def export(
    records: Iterable[dict[str, Any]], fields: tuple[str, ...], fmt: Format
) -> Iterator[str]:
    return as_csv(records, fields) if fmt == "csv" else as_json(records)


@dataclass(frozen=True)
class ImportedDecision:
    line: int  # the row's line in the file (CSV) or its index + 1 (JSON)
    review_id: int
    action: Literal["confirm", "reject"]


def parse_decisions(text: str, fmt: Format) -> list[ImportedDecision]:
    """The decided rows of a reviewed export; blank decisions are left out.

    Raises ``InputError`` naming every bad row (up to ``MAX_PROBLEMS_SHOWN``) when any row is
    bad: a file is applied whole or not at all."""
    rows = _csv_rows(text) if fmt == "csv" else _json_rows(text)
    found: list[ImportedDecision] = []
    problems: list[str] = []
    seen: dict[int, int] = {}
    for line, row in rows:
        raw_id = str(row.get("review_id", "") or "").strip()
        decision = str(row.get("decision", "") or "").strip().lower()
        if not decision:
            continue
        if decision not in ("confirm", "reject"):
            problems.append(
                f"row {line}: decision must be confirm, reject or blank, got {decision!r}"
            )
            continue
        if not raw_id.isdigit() or not 1 <= int(raw_id) < 2**63:
            problems.append(f"row {line}: review_id must be a positive integer, got {raw_id!r}")
            continue
        review_id = int(raw_id)
        if review_id in seen:
            problems.append(
                f"row {line}: review {review_id} is decided again (row {seen[review_id]})"
            )
            continue
        seen[review_id] = line
        found.append(
            ImportedDecision(line, review_id, cast(Literal["confirm", "reject"], decision))
        )
    if len(found) > MAX_IMPORT_ROWS:
        problems.append(f"at most {MAX_IMPORT_ROWS} decisions per file, got {len(found)}")
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = len(problems) - len(shown)
        raise InputError(
            f"the file has {len(problems)} bad row(s); nothing was applied:\n  "
            + "\n  ".join(shown)
            + (f"\n  ... and {more} more" if more else ""),
            detail={"problems": problems[:MAX_PROBLEMS_SHOWN]},
        )
    return found


def _csv_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"review_id", "decision"} <= set(reader.fieldnames):
        raise InputError("a CSV decisions file needs a header with review_id and decision columns")
    try:
        return [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise InputError(f"the CSV cannot be read at line {reader.line_num}: {exc}") from None


def _json_rows(text: str) -> list[tuple[int, dict[str, Any]]]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"the JSON cannot be read: {exc}") from None
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        raise InputError("a JSON decisions file is a list of objects with review_id and decision")
    return [(index + 1, item) for index, item in enumerate(body)]
