"""A reader that goes away (``dhash deploy | head -1``) never stops a run mid-phase."""

from __future__ import annotations

import os
import sys

import pytest

from dhash_rollout.commands.deploy import _printer


def test_progress_lines_after_the_reader_closed_are_dropped_not_raised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read: every write is EPIPE
    with os.fdopen(write_end, "w") as closed_stdout:
        monkeypatch.setattr(sys, "stdout", closed_stdout)
        say = _printer(as_json=False)
        say("phase backup: started")  # raised BrokenPipeError before
        say("phase backup: done")
        closed_stdout.write("the exit-time flush is quiet too\n")
        closed_stdout.flush()
