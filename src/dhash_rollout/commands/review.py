"""``dhash review stats|export|import``: the review queue from the command line (docs/review.md).

``stats`` prints what the console's statistics page shows (decisions by distance, the
suggested thresholds); ``export`` writes the pending queue (or the decisions log) as CSV or
JSON for offline review; ``import`` applies a reviewed export, each row through the same
audited use case the API and the console use, in the name given with ``--reviewer``. The
database is ``DHASH_DATABASE_URL`` (or the SQLite file under ``DHASH_DATA_DIR``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Literal

import typer

from dhash_service.errors import CheckFailed, InputError

review_app = typer.Typer(
    name="review",
    help="The low-confidence review queue: stats, export, import (offline review).",
    no_args_is_help=True,
)

FormatOption = typer.Option("csv", "--format", help="csv or json.")
MAX_IMPORT_BYTES = 64 * 1024 * 1024


def register(app: typer.Typer) -> None:
    app.add_typer(review_app)


def _check_format(value: str) -> Literal["csv", "json"]:
    if value not in ("csv", "json"):
        raise typer.BadParameter("must be csv or json", param_hint="--format")
    return "csv" if value == "csv" else "json"


@review_app.command("stats")
def stats(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Decisions by Hamming distance, with the thresholds they suggest."""
    from dhash_service.config import load_settings
    from dhash_service.review_desk import open_desk

    settings = load_settings()
    desk, engine = open_desk(settings)
    try:
        found = desk.stats()
    finally:
        engine.dispose()
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "match_threshold": settings.match_threshold,
                    "review_threshold": settings.review_threshold,
                    "suggested_match_threshold": found.suggested_match_threshold,
                    "suggested_review_threshold": found.suggested_review_threshold,
                    "rows": [
                        {
                            "distance": r.distance,
                            "confirmed": r.confirmed,
                            "rejected": r.rejected,
                            "pending": r.pending,
                            "confirmed_low": round(r.confirmed_low, 4),
                            "confirmed_high": round(r.confirmed_high, 4),
                        }
                        for r in found.rows
                    ],
                }
            )
        )
        return
    typer.echo(
        f"thresholds: match <= {settings.match_threshold}, review <= {settings.review_threshold}"
        f"; {found.decided} decided, {found.pending} pending"
    )
    typer.echo(f"{'distance':>8} {'confirmed':>9} {'rejected':>8} {'pending':>7}  confirmed share")
    for r in found.rows:
        label = "none" if r.distance is None else str(r.distance)
        share = (
            f"{r.confirmed_share:.0%} ({r.confirmed_low:.0%}-{r.confirmed_high:.0%})"
            if r.confirmed_share is not None
            else "-"
        )
        typer.echo(f"{label:>8} {r.confirmed:>9} {r.rejected:>8} {r.pending:>7}  {share}")
    suggestion = (
        f"suggested (95% Wilson bounds, target {found.target:.0%}): match threshold "
        f"{_or_unknown(found.suggested_match_threshold)}, review threshold "
        f"{_or_unknown(found.suggested_review_threshold)}"
    )
    typer.echo(suggestion)


def _or_unknown(value: int | None) -> str:
    return "(not enough decisions)" if value is None else str(value)


@review_app.command("export")
def export_queue(
    fmt: str = FormatOption,
    what: str = typer.Option(
        "queue", "--what", help="queue (pending items, for offline review) or decisions (the log)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="File (default: stdout)."),
) -> None:
    """Write the pending queue (with an empty decision column) or the decisions log."""
    from dhash_service.config import load_settings
    from dhash_service.review_desk import open_desk
    from dhash_service.review_exchange import (
        DECISION_FIELDS,
        QUEUE_FIELDS,
        decision_record,
        export,
        queue_record,
    )

    chosen = _check_format(fmt)
    if what not in ("queue", "decisions"):
        raise typer.BadParameter("must be queue or decisions", param_hint="--what")
    desk, engine = open_desk(load_settings())
    try:
        if what == "queue":
            chunks = export((queue_record(r) for r in desk.pending_rows()), QUEUE_FIELDS, chosen)
        else:
            records = (decision_record(r) for r in desk.all_decisions())
            chunks = export(records, DECISION_FIELDS, chosen)
        if output is None:
            for chunk in chunks:
                sys.stdout.write(chunk)
            sys.stdout.flush()
        else:
            partial = output.with_name(output.name + ".partial")
            with partial.open("w", encoding="utf-8", newline="") as out:
                for chunk in chunks:
                    out.write(chunk)
            partial.replace(output)  # a reader never sees half an export
            typer.echo(f"wrote {output}", err=True)
    finally:
        engine.dispose()


@review_app.command("import")
def import_decisions(
    path: Path = typer.Argument(..., metavar="FILE", help="A reviewed export (CSV or JSON)."),
    reviewer: str = typer.Option(
        ..., "--reviewer", help="Who reviewed the file: recorded on every decision."
    ),
    fmt: str | None = typer.Option(None, "--format", help="csv or json (default: by suffix)."),
) -> None:
    """Apply the decisions of a reviewed export (rows with confirm or reject)."""
    from dhash_service.config import load_settings
    from dhash_service.review_desk import open_desk
    from dhash_service.review_exchange import parse_decisions

    chosen = _check_format(fmt or ("json" if path.suffix.lower() == ".json" else "csv"))
    try:
        if path.stat().st_size > MAX_IMPORT_BYTES:
            raise InputError(f"{path} is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    decisions = parse_decisions(text, chosen)
    desk, engine = open_desk(load_settings())
    try:
        result = desk.apply(decisions, reviewer.strip())
    finally:
        engine.dispose()
    typer.echo(f"applied {len(result.decided)} decision(s) as {reviewer.strip()}")
    for review_id, why in result.refused.items():
        typer.echo(f"not applied: review {review_id}: {why}", err=True)
    if result.refused:
        raise CheckFailed(f"{len(result.refused)} decision(s) were not applied (see above)")
