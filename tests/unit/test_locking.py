import fcntl
import json
import multiprocessing
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from dhash_rollout.runs.locking import LOOK_GRACE_S, hold_lock, lock_holder
from dhash_service.errors import Locked


def _hold_forever(path: str, ready: "multiprocessing.synchronize.Event") -> None:
    with hold_lock(Path(path), "deploy"):
        ready.set()
        signal.pause()


def test_second_holder_is_refused_with_the_first_holders_pid(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "production.lock"
    with hold_lock(lock, "deploy") as held:
        with (
            pytest.raises(Locked, match=f"pid {os.getpid()}") as err,
            hold_lock(lock, "backup"),
        ):
            pass
        assert err.value.exit_code == 3
        assert held.took_over is None


def test_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    lock = tmp_path / "production.lock"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_forever, args=(str(lock), ready))
    proc.start()
    assert ready.wait(10)
    with pytest.raises(Locked), hold_lock(lock, "deploy"):
        pass
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    with hold_lock(lock, "deploy") as held:
        assert held.took_over is not None
        assert held.took_over.pid == proc.pid
        assert json.loads(lock.read_text())["pid"] == os.getpid()


def test_released_lock_leaves_no_holder_record(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with hold_lock(lock, "deploy"):
        pass
    with hold_lock(lock, "deploy") as held:
        assert held.took_over is None


def test_the_holder_takes_its_own_lock_again_by_passing_it(tmp_path: Path) -> None:
    lock = tmp_path / "production.lock"
    with hold_lock(lock, "deploy") as outer:
        with hold_lock(lock, "rollback", within=outer) as inner:
            assert inner.nested and inner.holder == outer.holder
        # leaving the inner block keeps the outer lock: another taker is still refused
        with pytest.raises(Locked), hold_lock(lock, "backup"):
            pass
    with hold_lock(lock, "deploy") as again:
        assert not again.nested


def test_a_lock_not_held_cannot_be_passed_as_held(tmp_path: Path) -> None:
    lock = tmp_path / "production.lock"
    with hold_lock(lock, "deploy") as outer:
        pass
    with (
        pytest.raises(Locked, match="not held by this process"),
        hold_lock(lock, "rollback", within=outer),
    ):
        pass


def test_a_look_names_the_holder_and_finds_nobody_once_released(tmp_path: Path) -> None:
    lock = tmp_path / "production.lock"
    assert lock_holder(lock) is None  # no file yet
    with hold_lock(lock, "deploy"):
        who = lock_holder(lock)
        assert who is not None and f"pid {os.getpid()}" in who and "(deploy)" in who
    assert lock_holder(lock) is None


def test_a_look_leaves_a_killed_holders_record_for_the_next_taker(tmp_path: Path) -> None:
    lock = tmp_path / "production.lock"
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold_forever, args=(str(lock), ready))
    proc.start()
    assert ready.wait(10)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(10)
    assert lock_holder(lock) is None  # the kernel dropped it with the process
    assert lock_holder(lock) is None
    with hold_lock(lock, "deploy") as held:
        assert held.took_over is not None and held.took_over.pid == proc.pid


def test_a_run_started_while_someone_looks_is_not_refused(tmp_path: Path) -> None:
    lock = tmp_path / "production.lock"
    lock.touch()
    looking = threading.Event()

    def look_slowly() -> None:  # a look held for longer than a real one, inside the grace
        fd = os.open(lock, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_SH)
        looking.set()
        time.sleep(LOOK_GRACE_S / 3)
        os.close(fd)

    looker = threading.Thread(target=look_slowly)
    looker.start()
    assert looking.wait(5)
    with hold_lock(lock, "rollback") as held:
        assert held.holder.purpose == "rollback"
    looker.join()


def test_a_live_holder_is_still_refused_after_the_grace(tmp_path: Path) -> None:
    lock = tmp_path / "production.lock"
    with hold_lock(lock, "deploy"):
        started = time.monotonic()
        with pytest.raises(Locked, match=r"\(deploy\)"), hold_lock(lock, "rollback"):
            pass
        assert time.monotonic() - started >= LOOK_GRACE_S
