"""The local target for real: releases installed, supervisord started, processes switched."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dhash_rollout.environments import Environment, load_environment
from dhash_rollout.releases import ReleaseSource
from dhash_rollout.runs.schema import migrate_with
from dhash_rollout.targets.local import LocalTarget
from dhash_service.errors import CheckFailed, NotFound, Unavailable
from tests.support.release_builds import dhash_bin, dhash_env, wheel_for, write_environments

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    base = tmp_path_factory.mktemp("local-target")
    write_environments(base, api_token="target-test-token")
    old = os.environ.get("DHASH_ENVIRONMENTS_FILE")
    os.environ.update(dhash_env(base))
    env = load_environment("production", base)
    target = LocalTarget(env)
    try:
        for version in ("1.0.0", "2.0.0"):
            target.install(ReleaseSource("wheel", str(wheel_for(version))))
        first = target.release("1.0.0")
        assert first is not None
        migrate_with(first, env, base, None)
        yield target
    finally:
        target.shutdown()
        if old is None:
            os.environ.pop("DHASH_ENVIRONMENTS_FILE", None)
        else:
            os.environ["DHASH_ENVIRONMENTS_FILE"] = old


def _served_version(env: Environment) -> str:
    return str(httpx.get(f"{env.url}/health", timeout=5).json()["version"])


def _running(target: LocalTarget) -> dict[str, str | None]:
    return {p.name: p.release for p in target.status().processes if p.state == "RUNNING"}


def test_activation_starts_supervisord_on_a_unix_socket_and_serves_the_release(
    target: LocalTarget,
) -> None:
    activation = target.activate("1.0.0")
    assert activation.changed and activation.previous is None
    assert _served_version(target.env) == "1.0.0"
    conf = target.layout.conf_path.read_text()
    assert "[unix_http_server]" in conf and "inet_http_server" not in conf
    assert target.layout.socket_path.is_socket()
    assert oct(target.layout.socket_path.stat().st_mode & 0o777) == "0o700"
    assert os.readlink(target.root / "current") == "releases/1.0.0"
    assert list(_running(target).values()) == ["1.0.0"]
    # The program file holds the API token: only its owner reads it.
    (program,) = target.layout.programs_dir.glob("*.conf")
    assert oct(program.stat().st_mode & 0o777) == "0o600"


def test_a_switch_serves_the_new_release_and_retires_the_old_slot(target: LocalTarget) -> None:
    target.activate("1.0.0")  # no-op when the previous test left it serving
    activation = target.activate("2.0.0")
    assert activation.version == "2.0.0" and activation.previous == "1.0.0"
    assert _served_version(target.env) == "2.0.0"
    assert list(_running(target).values()) == ["2.0.0"]
    assert len(list(target.layout.programs_dir.glob("*.conf"))) == 1
    status = target.status()
    assert (status.current, status.previous) == ("2.0.0", "1.0.0")


def test_activating_the_serving_release_again_changes_nothing(target: LocalTarget) -> None:
    target.activate("2.0.0")
    pid_before = next(p.pid for p in target.status().processes if p.state == "RUNNING")
    again = target.activate("2.0.0")
    assert not again.changed
    assert next(p.pid for p in target.status().processes if p.state == "RUNNING") == pid_before


def test_a_switch_interrupted_with_both_slots_running_converges(target: LocalTarget) -> None:
    target.activate("2.0.0")
    # What a deploy killed after starting the new slot leaves: both running, current = old.
    release = target.release("1.0.0")
    assert release is not None
    slot = target.idle_slot(target.supervisor.slots(), target.current())
    target.configure_slot(slot, release, "interrupted")
    target.supervisor.ensure_started(slot)
    target.wait_ready(slot)
    assert sorted(v or "" for v in _running(target).values()) == ["1.0.0", "2.0.0"]
    assert os.readlink(target.root / "current") == "releases/2.0.0"
    target.activate("1.0.0")  # reuses the slot already serving 1.0.0, retires the other
    assert list(_running(target).values()) == ["1.0.0"]
    assert os.readlink(target.root / "current") == "releases/1.0.0"


def test_a_release_that_cannot_start_is_abandoned_and_the_old_one_keeps_serving(
    target: LocalTarget,
) -> None:
    target.activate("1.0.0")
    broken = target.install(ReleaseSource("wheel", str(wheel_for("9.9.9"))))
    broken.dhash.write_text(
        '#!/bin/sh\nprintf \'Traceback (most recent call last):\\n  File "app.py", line 1\\n'
        "RuntimeError: cannot start\\n' >&2\nexit 3\n"
    )
    with pytest.raises(CheckFailed, match=r"cannot start|FATAL|BACKOFF|EXITED") as failed:
        target.activate("9.9.9")
    # One line for the operator: the exception, and where the process's whole output is.
    message = failed.value.message
    assert "\n" not in message and "Traceback" not in message
    assert "RuntimeError: cannot start" in message
    assert "dhash release logs --env production" in message
    assert _served_version(target.env) == "1.0.0"
    assert list(_running(target).values()) == ["1.0.0"]
    assert os.readlink(target.root / "current") == "releases/1.0.0"
    shutil.rmtree(broken.path)


def test_activating_a_release_that_is_not_installed_is_refused(target: LocalTarget) -> None:
    with pytest.raises(NotFound, match="not installed"):
        target.activate("7.7.7")


def test_stop_then_start_brings_the_current_release_back(target: LocalTarget) -> None:
    target.activate("2.0.0")
    target.stop()
    assert _running(target) == {}
    said: list[str] = []
    target.start(progress=said.append)
    assert _served_version(target.env) == "2.0.0"
    assert not [line for line in said if line.startswith("stopping")], said  # it was down


def test_release_start_after_stop_all_starts_supervisord_again(target: LocalTarget) -> None:
    target.activate("2.0.0")
    base = target.root.parents[1]

    def dhash(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [dhash_bin(), "release", *args, "--env", "production"],
            cwd=base,
            env=dhash_env(base),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    stopped = dhash("stop", "--all")
    assert stopped.returncode == 0, stopped.stderr
    assert not target.supervisor.running() and not target.layout.socket_path.exists()
    started = dhash("start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "Traceback" not in started.stderr
    assert "serving 2.0.0" in started.stdout
    assert _served_version(target.env) == "2.0.0"


def test_a_dead_supervisord_is_a_clear_error_not_a_traceback(target: LocalTarget) -> None:
    target.activate("2.0.0")
    target.shutdown()
    with pytest.raises(Unavailable, match="does not answer"), target.supervisor.rpc() as rpc:
        rpc.getState()
    target.start()
    assert _served_version(target.env) == "2.0.0"


def test_deactivate_leaves_nothing_serving_and_no_current_release(target: LocalTarget) -> None:
    target.activate("2.0.0")
    target.deactivate()
    assert _running(target) == {} and target.current() is None
    assert list(target.layout.programs_dir.glob("*.conf")) == []
    target.activate("2.0.0")  # what a later deploy does
    assert _served_version(target.env) == "2.0.0"


def test_status_reports_the_kernel_handoff_setting(target: LocalTarget) -> None:
    status = target.status().to_dict()
    assert status["tcp_migrate_req"] in (True, False, None)
    json.dumps(status)


def test_a_deep_root_gets_a_short_stable_supervisor_socket(tmp_path: Path) -> None:
    deep = tmp_path.joinpath(*["a-rather-long-directory-name"] * 5)
    env = Environment("production", deep, 1, "http://127.0.0.1:1", "sqlite:///x.db")
    first, again = LocalTarget(env).layout.socket_path, LocalTarget(env).layout.socket_path
    assert first == again and len(str(first).encode()) <= 100
    assert first != deep / "supervisor" / "supervisor.sock"


def test_restore_is_refused_while_the_environment_serves(target: LocalTarget) -> None:
    """Writes landing between the snapshot and the swap would be in neither database: the
    operator is told to stop the service first (or to roll back with --backup)."""
    from dhash_rollout.backup import create_backup

    target.activate("1.0.0")
    base = target.root.parents[1]
    made = create_backup(target.env, base / "backups")
    database = target.env.data_dir / "dhash.sqlite3"
    before = database.stat().st_ino
    done = subprocess.run(
        [dhash_bin(), "restore", "--env", "production", "--backup", str(made.path)],
        cwd=base,
        env=dhash_env(base),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "production is serving (dhash-" in done.stderr and "Traceback" not in done.stderr
    assert "dhash release stop --env production" in done.stderr
    assert database.stat().st_ino == before  # not swapped
    assert not list(target.env.data_dir.glob("*.prerestore-*"))
    assert _served_version(target.env) == "1.0.0"


def _leave_steering_like_a_killed_run(port: int, index: int) -> None:
    """What a controller SIGKILLed inside a switch leaves: its socket is gone (the kernel closed
    it) but the program it attached stays on the port group."""
    import socket

    from dhash_rollout.targets.steering import SO_ATTACH_REUSEPORT_CBPF, _return_program

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        fprog, _keep = _return_program(index)
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    finally:
        sock.close()


def test_going_back_beside_a_killed_switch_clears_its_steering_and_serves_only_the_old(
    target: LocalTarget,
) -> None:
    """Issue 12 item 1: a deploy killed right after its new slot started left both slots running,
    ``current`` on the old release and its steering program sending every new connection to the
    new slot; going back to the old release must clear it (not wait for the old one's readiness
    in vain, abandon it and leave only the new one serving)."""
    target.activate("1.0.0")
    target.activate("2.0.0")
    release = target.release("1.0.0")
    assert release is not None
    slot = target.idle_slot(target.supervisor.slots(), target.current())
    target.configure_slot(slot, release, "killed-deploy")
    target.supervisor.ensure_started(slot)
    new_pid = target.wait_ready(slot)
    _leave_steering_like_a_killed_run(target.env.port, 1)
    assert target.readiness.all_reach(new_pid, probes=6)  # the leftover steers to the new slot
    kept = target.readiness.ready_timeout
    target.readiness.ready_timeout = 8.0  # the 60 s default is what the operator waited
    said: list[str] = []
    try:
        target.activate("2.0.0", progress=said.append)
    finally:
        target.readiness.ready_timeout = kept
    assert list(_running(target).values()) == ["2.0.0"]
    assert os.readlink(target.root / "current") == "releases/2.0.0"
    assert any("steering" in line and "killed run" in line for line in said), said
    old_pid = next(p.pid for p in target.status().processes if p.state == "RUNNING")
    assert target.readiness.all_reach(old_pid, probes=6)


def test_a_finished_switch_leaves_no_steering_on_the_port(target: LocalTarget) -> None:
    """A program left on the group after a switch would send the next deploy's new slot every
    connection the moment it listens, before anyone checked it is ready."""
    from dhash_rollout.targets.steering import clear_steering

    target.activate("1.0.0")
    activation = target.activate("2.0.0")
    assert activation.steered
    assert clear_steering("127.0.0.1", target.env.port) is False


_STRAY = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(8)
print("listening", flush=True)
time.sleep(600)
"""


def test_a_foreign_listener_on_the_port_is_reported_and_refuses_the_switch(
    target: LocalTarget,
) -> None:
    """Issue 12 item 4: with SO_REUSEPORT a stray process of the same user joins the port group
    and takes a share of new connections; the kernel's socket table names it."""
    import sys

    target.activate("1.0.0")
    stray = subprocess.Popen(
        [sys.executable, "-c", _STRAY, str(target.env.port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert stray.stdout is not None and stray.stdout.readline().strip() == "listening"
        foreign = [p for p in target.status().processes if p.state == "FOREIGN"]
        assert [p.pid for p in foreign] == [stray.pid]
        with pytest.raises(CheckFailed, match=rf"does not run: pid {stray.pid} \("):
            target.activate("2.0.0")
        assert list(_running(target).values()) == ["1.0.0"]  # nothing was changed
    finally:
        stray.kill()
        stray.wait()
        if stray.stdout is not None:
            stray.stdout.close()
    assert [p for p in target.status().processes if p.state == "FOREIGN"] == []


def test_the_service_a_dead_supervisord_left_is_reported_and_stopped_by_start(
    target: LocalTarget,
) -> None:
    """Issue 12 item 4: after supervisord is killed its service keeps serving while the slots
    read ABSENT; ``release start`` started a second copy beside it. Now status names the orphan
    and start leaves exactly one supervised process serving."""
    import signal

    target.activate("1.0.0")
    os.kill(int(target.layout.pidfile.read_text().strip()), signal.SIGKILL)
    deadline = time.monotonic() + 10
    while target.supervisor.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = [p for p in target.status().processes if p.state == "ORPHAN"]
    assert [p.release for p in orphans] == ["1.0.0"], target.status()
    assert _served_version(target.env) == "1.0.0"  # it still serves
    said: list[str] = []
    target.start(progress=said.append)
    status = target.status()
    assert [p for p in status.processes if p.state in ("ORPHAN", "FOREIGN")] == [], status
    assert list(_running(target).values()) == ["1.0.0"]
    assert any("orphaned service" in line for line in said), said
    assert all(not _alive(p.pid) for p in orphans if p.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_a_stopped_environment_stays_stopped_when_supervisord_starts_again(
    target: LocalTarget,
) -> None:
    """Issue 12 item 9: ``release stop`` came back by itself after a supervisord restart (the
    program files still said autostart)."""
    target.activate("2.0.0")
    target.stop()
    target.shutdown()
    target.supervisor.ensure()  # a reboot, or anything that starts supervisord again
    time.sleep(2.0)  # startsecs=1: an autostarted slot would be RUNNING by now
    assert _running(target) == {}
    target.start()
    assert _served_version(target.env) == "2.0.0"
