"""`dhash canary` end to end on the local target: v1 deployed and serving; a canary of v2 aborted
by `dhash canary abort` from another process while `start` runs (stable untouched); then a
second canary of v2, stepped under load and promoted by the judgement. Zero failed requests
through start, every step, promote and abort. (The tests run in this order: the second starts
where the first left the site.)"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from dhash_rollout.canary.controller import read_state
from tests.support.load import LoadGenerator
from tests.support.release_builds import dhash_bin, dhash_env, wheel_for
from tests.support.rollout_site import TOKEN, Site

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site.create(tmp_path_factory.mktemp("canary-site"), shutdown_grace_seconds=3)
    try:
        done = s.deploy(wheel_for("1.0.0"), "--no-monitor")
        assert done.returncode == 0, done.stderr[-2000:]
        # installing is inert; both canaries below run this installed release
        done = s.run("release", "install", "--env", "production",
                     "--source", str(wheel_for("2.0.0")))  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        yield s
    finally:
        s.shutdown()


def _start(site: Site, version: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [dhash_bin(), "canary", "start", "--env", "production",
         "--version", version, "--interval", "0.5", *args],
        cwd=site.base, env={**dhash_env(site.base), "PYTHONFAULTHANDLER": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_an_operator_aborts_a_running_canary_and_stable_is_untouched(site: Site) -> None:
    stable = site.target.current().version  # type: ignore[union-attr]
    with LoadGenerator(site.env.port, TOKEN, threads=3, max_seconds=50, ingest_every=2,
                       seed_base=0) as load:  # fmt: skip
        proc = _start(site, "2.0.0", "--steps", "10", "--step-minutes", "10")
        _wait_running(site, proc)
        time.sleep(1.5)  # a few polls
        shown = site.run("canary", "status", "--env", "production")
        assert "canary 2.0.0" in shown.stdout and "10% of new connections" in shown.stdout
        assert "failures vs stable" in shown.stdout
        aborted = site.run("canary", "abort", "--env", "production", timeout=120)
        assert aborted.returncode == 0, aborted.stderr
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err[-3000:]  # the run ended aborted
    assert read_state(site.env).status == "aborted"  # type: ignore[union-attr]
    assert site.target.current().version == stable  # type: ignore[union-attr]
    running = [s for s in site.target.supervisor.slots() if s.state == "RUNNING"]
    assert [s.release for s in running] == [stable]
    assert load.result.failed == 0, load.result.failures[:5]
    # The weighted program is gone with the canary: a process joining the port now gets new
    # connections from the kernel's own spreading (the next deploy's readiness needs that).
    assert _joiner_reached(site.env.port)


def test_a_good_canary_steps_and_is_promoted_with_no_failed_request(site: Site) -> None:
    # Two load runs back to back (the generator runs at most 60 s): the candidate's start,
    # then its steps and the promotion.
    with LoadGenerator(
        site.env.port, TOKEN, threads=3, max_seconds=60, ingest_every=2, seed_base=500_000
    ) as starting:
        proc = _start(site, "2.0.0", "--steps", "25,50", "--step-minutes", "0.05")
        _wait_running(site, proc)
    with LoadGenerator(
        site.env.port, TOKEN, threads=3, max_seconds=60, ingest_every=2, seed_base=600_000
    ) as load:
        try:
            _out, err = proc.communicate(timeout=58)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # faulthandler: every thread's stack to stderr
            _out, err = proc.communicate(timeout=30)
            pytest.fail(f"dhash canary start did not end: {err[-3000:]}")
    assert starting.result.failed == 0, starting.result.failures[:5]
    assert proc.returncode == 0, err[-3000:]
    assert "now takes 50% of new connections" in err
    assert "promoted" in err
    assert site.target.current().version == "2.0.0"  # type: ignore[union-attr]
    assert site.health()["version"] == "2.0.0"
    assert load.result.failed == 0, load.result.failures[:5]
    status = site.run("canary", "status", "--env", "production", "--json")
    body = json.loads(status.stdout)
    assert body["canary"]["status"] == "promoted" and body["polls"] >= 2


def _wait_running(site: Site, proc: subprocess.Popen[str], timeout: float = 58) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(site.env)
        if state and state.status == "running" and state.version == "2.0.0":
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    raise AssertionError("the canary did not start")


def _joiner_reached(port: int, tries: int = 60) -> bool:
    with socket.socket() as joiner:
        joiner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        joiner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        joiner.bind(("127.0.0.1", port))
        joiner.listen(64)
        joiner.setblocking(False)
        for _ in range(tries):
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            try:
                joiner.accept()[0].close()
                return True
            except BlockingIOError:
                continue
    return False
