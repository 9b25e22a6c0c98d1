"""The decision ledger: one JSON line per event of a monitoring run, appended and flushed.

``start`` (what was watched, how), one ``poll`` per evaluation round (every gate's value, window,
samples, threshold, status), ``notice`` and ``verdict``. It is the monitor's memory: a re-run
for the same deploy reads it back and continues the same window, the report is drawn from it
and ``dhash gates replay`` re-evaluates it against other thresholds. A torn last line (a crash
mid-write) is skipped, never fatal.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def run_stem(environment: str, window_start: float) -> str:
    """``monitor_<env>_<ts>``, the switch's UTC time: the same for every re-run of one deploy."""
    stamp = datetime.fromtimestamp(window_start, UTC).strftime("%Y%m%d_%H%M%S")
    return f"monitor_{environment}_{stamp}"


@dataclass
class LedgerFiles:
    directory: Path
    stem: str

    @property
    def ledger(self) -> Path:
        return self.directory / f"{self.stem}.jsonl"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.stem}.log"

    @property
    def samples(self) -> Path:
        return self.directory / f"{self.stem}.samples.jsonl"

    @property
    def report(self) -> Path:
        return self.directory / f"{self.stem}.html"


def files_for(directory: Path, environment: str, window_start: float, run_id: str) -> LedgerFiles:
    """This run's files; a ledger of another run with the same stem gets a suffix, not mixed.

    A stem is claimed by creating ``<stem>.claim`` (holding the run id) exclusively, so two
    monitors starting in the same second in one directory (a fleet's gate watches its hosts
    and the fleet at once) cannot both take it: looking for a start row first and writing it
    later let both pick the same file. The same run id finds its claim again (a resume)."""
    base = run_stem(environment, window_start)
    directory.mkdir(parents=True, exist_ok=True)
    for n in range(100):
        stem = base if n == 0 else f"{base}_{n}"
        files = LedgerFiles(directory, stem)
        start = next((r for r in read_rows(files.ledger) if r.get("kind") == "start"), None)
        if start is not None and start.get("run_id") != run_id:
            continue
        claim = directory / f"{stem}.claim"
        try:
            fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _claimed_by(claim) == run_id:
                return files  # ours: a resume
            continue  # another run's (or one still writing its id)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(run_id + "\n")
        return files
    raise RuntimeError(f"too many monitor ledgers named {base}_* in {directory}")


def _claimed_by(claim: Path) -> str | None:
    try:
        return claim.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def read_rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


@dataclass
class Ledger:
    path: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def open(cls, path: Path) -> Ledger:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, read_rows(path))

    def append(self, kind: str, data: Mapping[str, object]) -> None:
        row = {"kind": kind, **data}
        line = json.dumps(row, allow_nan=False, default=str) + "\n"
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line)
            out.flush()
            os.fsync(out.fileno())
        self.rows.append(row)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("kind") == kind]
