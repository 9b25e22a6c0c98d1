"""Which files a monitor run writes: one stem per run, even when runs start in the same second."""

from __future__ import annotations

import threading
from pathlib import Path

from dhash_rollout.monitor.ledger import LedgerFiles, files_for

WINDOW = 1_800_000_000.0


def test_monitors_starting_in_the_same_second_in_one_directory_never_share_a_ledger(
    tmp_path: Path,
) -> None:
    got: dict[str, LedgerFiles] = {}
    start = threading.Barrier(8)

    def claim(run_id: str) -> None:
        start.wait()
        got[run_id] = files_for(tmp_path, "production", WINDOW, run_id)

    threads = [threading.Thread(target=claim, args=(f"run-{n}",)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({files.stem for files in got.values()}) == 8


def test_the_same_run_finds_its_files_again(tmp_path: Path) -> None:
    first = files_for(tmp_path, "production", WINDOW, "deploy-1")
    other = files_for(tmp_path, "production", WINDOW, "deploy-2")
    assert files_for(tmp_path, "production", WINDOW, "deploy-1") == first
    assert other.stem == first.stem + "_1"


def test_a_ledger_written_before_claims_existed_keeps_its_run(tmp_path: Path) -> None:
    old = LedgerFiles(tmp_path, files_for(tmp_path / "x", "production", WINDOW, "a").stem)
    old.ledger.write_text('{"kind": "start", "run_id": "deploy-old"}\n')
    assert files_for(tmp_path, "production", WINDOW, "deploy-new").stem == old.stem + "_1"
    assert files_for(tmp_path, "production", WINDOW, "deploy-old").stem == old.stem
