"""What the operator sees while the monitor runs, and the ``tail -f``-able log.

On a terminal: a Rich live table (each gate, value, threshold, trend, time left). Otherwise:
one plain line per poll. The log file always gets the plain lines and every notice.
"""

from __future__ import annotations

import sys
from collections import defaultdict, deque
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

from dhash_rollout.monitor.gates import Evaluation, Status

SPARK = "▁▂▃▄▅▆▇█"
COLOURS = {
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.BREACH: "red",
    Status.FAIL: "bold red",
    Status.NO_DATA: "dim",
    Status.ERROR: "magenta",
}
UNITS = {"extractionFailureRate": "%", "p95HashTime": " ms"}


def _value(ev: Evaluation) -> str:
    if ev.value is None:
        return "—"
    return f"{ev.value:.4g}{UNITS.get(ev.gate.value, '')}"


def plain_line(offset_s: float, left_s: float, evaluations: Sequence[Evaluation]) -> str:
    parts = [
        f"{ev.gate.value}={_value(ev)} {ev.status.value}"
        + (f" (n={ev.samples})" if ev.window_s is not None else "")
        for ev in evaluations
    ]
    return f"t+{offset_s:7.1f}s left {left_s:7.1f}s | " + " | ".join(parts)


def stamp(line: str) -> str:
    return f"{datetime.now(UTC).isoformat(timespec='seconds')} {line}"


class MonitorView(Protocol):
    def poll(self, offset_s: float, left_s: float, evaluations: Sequence[Evaluation]) -> None: ...

    def say(self, line: str) -> None: ...

    def close(self) -> None: ...


class LogFile:
    """The human log: appended line by line, flushed, so ``tail -f`` follows it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._out = path.open("a", encoding="utf-8")

    def write(self, line: str) -> None:
        self._out.write(stamp(line) + "\n")
        self._out.flush()

    def close(self) -> None:
        self._out.close()


class QuietView:
    def poll(self, offset_s: float, left_s: float, evaluations: Sequence[Evaluation]) -> None:
        pass

    def say(self, line: str) -> None:
        pass

    def close(self) -> None:
        pass


class PlainView:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def poll(self, offset_s: float, left_s: float, evaluations: Sequence[Evaluation]) -> None:
        self.say(plain_line(offset_s, left_s, evaluations))

    def say(self, line: str) -> None:
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):  # the reader went away: the monitor goes on
            pass

    def close(self) -> None:
        pass


class RichView:
    """A live table on a terminal; notices print above it."""

    def __init__(self, title: str, out: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.live import Live

        self.title = title
        self.console = Console(file=out)
        self.trends: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=12))
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self.live.start()

    def _trend(self, gate: str) -> str:
        values = list(self.trends[gate])
        if not values:
            return ""
        low, high = min(values), max(values)
        span = (high - low) or 1.0
        return "".join(SPARK[int((v - low) / span * (len(SPARK) - 1))] for v in values)

    def poll(self, offset_s: float, left_s: float, evaluations: Sequence[Evaluation]) -> None:
        from rich.table import Table

        table = Table(title=f"{self.title} — t+{offset_s:.0f}s, {left_s:.0f}s left")
        for column in ("gate", "value", "threshold", "warn", "samples", "status", "trend"):
            table.add_column(column)
        colours = COLOURS
        for ev in evaluations:
            if ev.value is not None:
                self.trends[ev.gate.value].append(ev.value)
            table.add_row(
                ev.gate.value,
                _value(ev),
                f"{ev.threshold:g}",
                "" if ev.warn is None else f"{ev.warn:g}",
                str(ev.samples),
                f"[{colours[ev.status]}]{ev.status.value}[/]",
                self._trend(ev.gate.value),
            )
        self.live.update(table, refresh=True)

    def say(self, line: str) -> None:
        self.live.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self.live.stop()


def make_view(kind: str, title: str, out: TextIO | None = None) -> MonitorView:
    """``auto``: Rich on a terminal, plain lines otherwise; ``plain``; ``quiet``."""
    stream = out or sys.stdout
    if kind == "quiet":
        return QuietView()
    if kind == "rich" or (kind == "auto" and stream.isatty()):
        return RichView(title, out)
    return PlainView(stream)
