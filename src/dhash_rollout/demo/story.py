"""How the demo tells its story: Rich on a terminal, plain lines in a pipe (CI logs, README).

The rollout code says *what* happened (a chapter, a command, its output, a result, the final
checks); a :class:`Story` decides how it looks. Both renderers print the same words, so what a
pipe shows is exactly what the terminal said, without colour, boxes or a spinner.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Protocol, TextIO

from rich.console import Console
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from dhash_rollout.demo.outcome import Judgement


class Story(Protocol):
    def chapter(self, number: int, title: str) -> None: ...

    def say(self, text: str) -> None: ...

    def command(self, text: str) -> None: ...

    def output(self, text: str) -> None: ...

    def good(self, text: str) -> None: ...

    def bad(self, text: str) -> None: ...

    def status(self, text: str | None) -> None: ...

    def table(self, title: str, rows: Sequence[tuple[str, str]]) -> None: ...

    def verdict(self, judgement: Judgement) -> None: ...


class PlainStory:
    """One line per event, nothing but text: greppable, diffable, pasteable."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def chapter(self, number: int, title: str) -> None:
        self._line("")
        self._line(f"== {number}. {title}")

    def say(self, text: str) -> None:
        self._line(text)

    def command(self, text: str) -> None:
        self._line(f"$ {text}")

    def output(self, text: str) -> None:
        self._line(f"    {text}")

    def good(self, text: str) -> None:
        self._line(f"[ok] {text}")

    def bad(self, text: str) -> None:
        self._line(f"[FAIL] {text}")

    def status(self, text: str | None) -> None:
        """A spinner's text on a terminal; a pipe gets the lines of the other calls only."""

    def table(self, title: str, rows: Sequence[tuple[str, str]]) -> None:
        self._line(f"{title}:")
        width = max((len(k) for k, _ in rows), default=0)
        for key, value in rows:
            self._line(f"  {key.ljust(width)}  {value}")

    def verdict(self, judgement: Judgement) -> None:
        self._line("outcome:")
        for check in judgement.checks:
            mark = "ok  " if check.ok else "FAIL"
            self._line(f"  [{mark}] {check.name}: {check.detail}")
        self._line("")
        if judgement.ok:
            self._line("DEMO PASSED: the bad release was caught and rolled back, nothing lost")
        else:
            names = ", ".join(c.name for c in judgement.failed)
            self._line(f"DEMO FAILED: {names}")


class RichStory:
    """Rules for chapters, colour for results, a spinner while something long runs."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._status: Status | None = None

    def chapter(self, number: int, title: str) -> None:
        self.console.print()
        self.console.rule(f"[bold]{number}. {escape(title)}[/bold]", align="left")

    def say(self, text: str) -> None:
        self.console.print(escape(text), highlight=False)

    def command(self, text: str) -> None:
        self.console.print(f"[bold cyan]$ {escape(text)}[/bold cyan]", highlight=False)

    def output(self, text: str) -> None:
        self.console.print(f"    [dim]{escape(text)}[/dim]", highlight=False)

    def good(self, text: str) -> None:
        self.console.print(f"[green]✓[/green] {escape(text)}", highlight=False)

    def bad(self, text: str) -> None:
        self.console.print(f"[bold red]✗ {escape(text)}[/bold red]", highlight=False)

    def status(self, text: str | None) -> None:
        if text is None:
            if self._status is not None:
                self._status.stop()
                self._status = None
            return
        if self._status is None:
            self._status = self.console.status(escape(text))
            self._status.start()
        else:
            self._status.update(escape(text))

    def table(self, title: str, rows: Sequence[tuple[str, str]]) -> None:
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for key, value in rows:
            table.add_row(escape(key), escape(value))
        self.console.print(table)

    def verdict(self, judgement: Judgement) -> None:
        table = Table(title="Outcome", title_justify="left")
        table.add_column("", width=2)
        table.add_column("check", style="bold")
        table.add_column("evidence")
        for check in judgement.checks:
            mark = "[green]✓[/green]" if check.ok else "[bold red]✗[/bold red]"
            table.add_row(mark, escape(check.name), escape(check.detail))
        self.console.print(table)
        if judgement.ok:
            self.console.print(
                "[bold green]DEMO PASSED[/bold green]: the bad release was caught and rolled "
                "back, nothing lost"
            )
        else:
            names = ", ".join(c.name for c in judgement.failed)
            self.console.print(f"[bold red]DEMO FAILED[/bold red]: {escape(names)}")


def story_for(out: TextIO | None = None, *, plain: bool | None = None) -> Story:
    """Rich when ``out`` is a terminal (unless ``plain``), plain lines otherwise."""
    stream = out or sys.stdout
    if plain is None:
        plain = not stream.isatty()
    return PlainStory(stream) if plain else RichStory(Console(file=stream))
