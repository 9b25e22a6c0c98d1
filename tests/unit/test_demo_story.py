"""The demo's story: plain lines in a pipe (the README's output), Rich on a terminal, the same
words either way."""

from __future__ import annotations

import io
import re

from rich.console import Console

from dhash_rollout.demo.outcome import Check, Judgement
from dhash_rollout.demo.story import PlainStory, RichStory, story_for

PASSED = Judgement((Check("no failed request", True, "0 of 900 failed"),))
FAILED = Judgement(
    (
        Check("no failed request", True, "0 of 900 failed"),
        Check("no acknowledged write lost", False, "119 of 120 kept"),
    )
)


def _tell(story: PlainStory | RichStory, judgement: Judgement) -> None:
    story.chapter(2, "Release B [0.1.0+b] through the guarded pipeline")
    story.command("dhash deploy --env production --release-setting KEY=[x]")
    story.output("  > monitor: watch the quality gates")
    story.status("load: 10 requests")
    story.good("A serves")
    story.bad("B was NOT refused")
    story.table("figures", [("failed requests", "0"), ("acknowledged ingests kept", "1 of 1")])
    story.status(None)
    story.verdict(judgement)


def test_a_pipe_gets_plain_lines_and_no_escape_codes() -> None:
    out = io.StringIO()
    story = story_for(out)
    assert isinstance(story, PlainStory)
    _tell(story, PASSED)
    assert out.getvalue().splitlines() == [
        "",
        "== 2. Release B [0.1.0+b] through the guarded pipeline",
        "$ dhash deploy --env production --release-setting KEY=[x]",
        "      > monitor: watch the quality gates",
        "[ok] A serves",
        "[FAIL] B was NOT refused",
        "figures:",
        "  failed requests            0",
        "  acknowledged ingests kept  1 of 1",
        "outcome:",
        "  [ok  ] no failed request: 0 of 900 failed",
        "",
        "DEMO PASSED: the bad release was caught and rolled back, nothing lost",
    ]


def test_a_failed_run_names_what_failed() -> None:
    out = io.StringIO()
    _tell(PlainStory(out), FAILED)
    text = out.getvalue()
    assert "  [FAIL] no acknowledged write lost: 119 of 120 kept" in text
    assert text.rstrip().endswith("DEMO FAILED: no acknowledged write lost")


def test_a_terminal_gets_rich_with_the_same_words_and_markup_left_literal() -> None:
    out = io.StringIO()
    _tell(RichStory(Console(file=out, force_terminal=True, width=120)), FAILED)
    raw = out.getvalue()
    assert "\x1b[" in raw  # colour
    text = re.sub(r"\x1b\[[0-9;]*m", "", raw)
    for words in ("Release B [0.1.0+b]", "KEY=[x]", "B was NOT refused", "119 of 120 kept",
                  "DEMO FAILED"):  # fmt: skip
        assert words in text
