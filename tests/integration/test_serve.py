"""`dhash serve` as deployed: real processes, SO_REUSEPORT, multiprocess metrics, SIGTERM drain."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import TOKEN, photo
from tests.support.live_server import DHASH, dhash_serve, free_port, serve_env
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def serve_settings(url: str, **extra: str) -> dict[str, str]:
    return {
        "DHASH_DATABASE_URL": url,
        "DHASH_API_TOKENS": TOKEN,
        "DHASH_AUTO_MIGRATE": "true",
        "DHASH_ENV": "test",
        "DHASH_INDEX_SYNC_SECONDS": "0.2",
        **extra,
    }


def metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0


def fresh_get(url: str) -> httpx.Response:
    """One request on its own connection, so the kernel picks the listener/worker afresh."""
    return httpx.get(url, timeout=10, headers={"Connection": "close"})


def pids_seen(url: str, requests: int = 40) -> set[int]:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: fresh_get(f"{url}/health"), range(requests)))
    assert all(a.status_code == 200 for a in answers)
    return {a.json()["pid"] for a in answers}


@pytest.fixture
def settings(postgres_url: str) -> dict[str, str]:
    return serve_settings(postgres_url)


def test_metrics_are_exact_whichever_of_two_workers_answers_and_survive_a_restart(
    settings: dict[str, str], tmp_path: Path
) -> None:
    with dhash_serve(settings, tmp_path, workers=2) as run:
        # Start-up probed /health until both workers listened: count from here.
        health_before = metric(
            fresh_get(f"{run.url}/metrics").text,
            "dhash_requests_total",
            route="/health",
            status="200",
        )
        workers = pids_seen(run.url)
        assert len(workers) == 2  # both workers take connections
        data = photo(300)

        def post(_: int) -> int:
            response = httpx.post(
                f"{run.url}/v1/hash",
                content=data,
                headers={"Connection": "close", "Authorization": f"Bearer {TOKEN}"},
                timeout=30,
            )
            return response.status_code

        with ThreadPoolExecutor(6) as pool:
            assert set(pool.map(post, range(30))) == {200}
        for scrape in range(6):
            text = fresh_get(f"{run.url}/metrics").text
            assert metric(text, "dhash_hash_duration_seconds_count") == 30
            assert metric(text, "dhash_extractions_total", result="ok", kind="image") == 30
            assert metric(text, "dhash_requests_total", route="/v1/hash", status="200") == 30
            health = metric(text, "dhash_requests_total", route="/health", status="200")
            assert health == health_before + 40
            assert (
                metric(text, "dhash_requests_total", route="/metrics", status="200") == scrape + 1
            )
            assert metric(text, "dhash_build_info", version="0.1.0") == 1
            assert metric(text, "dhash_low_confidence_queue_length") == 0

        killed = min(workers)
        os.kill(killed, signal.SIGKILL)  # the parent must replace it, and keep its counts
        _wait_for(lambda: killed not in (now := pids_seen(run.url, 20)) and len(now) == 2, 60)
        text = fresh_get(f"{run.url}/metrics").text
        assert metric(text, "dhash_hash_duration_seconds_count") == 30
        assert metric(text, "dhash_requests_total", route="/v1/hash", status="200") == 30


def _client_on_worker(url: str, avoid: set[int]) -> tuple[httpx.Client, int]:
    """A kept-alive client whose connection landed on a worker not in ``avoid``."""
    for _ in range(50):
        client = httpx.Client(
            base_url=url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        pid = int(client.get("/health").json()["pid"])
        if pid not in avoid:
            return client, pid
        client.close()
    raise AssertionError(f"no connection reached a worker other than {avoid}")


def test_a_library_image_added_through_one_worker_is_found_through_the_other(
    settings: dict[str, str], tmp_path: Path
) -> None:
    with dhash_serve(settings, tmp_path, workers=2) as run, contextlib.ExitStack() as stack:
        writer, writer_pid = _client_on_worker(run.url, set())
        stack.callback(writer.close)
        reader, reader_pid = _client_on_worker(run.url, {writer_pid})
        stack.callback(reader.close)

        def found() -> list[int]:
            answer = reader.get("/v1/search", params={"hash": item["hash"], "radius": 0})
            return [match["image_id"] for match in answer.json()["matches"]]

        added = writer.post("/v1/images", content=photo(310), params={"library": "true"})
        assert added.status_code == 201, added.text
        item = added.json()["items"][0]
        waited = _wait_for(lambda: bool(found()), timeout=5)
        assert found() == [item["image_id"]]
        assert reader.get("/health").json()["pid"] == reader_pid != writer_pid
        assert waited < 0.2 + 1.5  # DHASH_INDEX_SYNC_SECONDS=0.2, plus slack for the load


def _start_upload(port: int, body: bytes) -> socket.socket:
    """A request whose body is only half sent: in flight until the rest follows."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    head = (
        f"POST /v1/hash HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
        f"Authorization: Bearer {TOKEN}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall(head + body[: len(body) // 2])
    return sock


def _finish_upload(sock: socket.socket, body: bytes) -> bytes:
    sock.sendall(body[len(body) // 2 :])
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
        if b"\r\n\r\n" in answer and answer.endswith(b"}"):
            break
    sock.close()
    return answer


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def _wait_for(condition: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "condition not met in time"
        time.sleep(0.05)
    return time.monotonic() - start


def test_sigterm_turns_ready_503_finishes_in_flight_requests_then_exits(
    postgres_url: str, tmp_path: Path
) -> None:
    grace = 12.0
    settings = serve_settings(
        postgres_url,
        DHASH_SHUTDOWN_DRAIN_SECONDS="2.0",
        DHASH_SHUTDOWN_GRACE_SECONDS=str(grace),
    )
    with dhash_serve(settings, tmp_path) as run, httpx.Client(base_url=run.url) as kept_alive:
        assert kept_alive.get("/ready").status_code == 200
        body = photo(301)
        in_flight = _start_upload(run.port, body)
        run.terminate()
        signalled = time.monotonic()

        _wait_for(lambda: kept_alive.get("/ready").status_code == 503, timeout=3)
        draining = fresh_get(f"{run.url}/ready")  # still accepting while draining
        assert draining.status_code == 503
        assert draining.json()["checks"]["shutdown"] == "draining"
        assert fresh_get(f"{run.url}/health").status_code == 200

        _wait_for(lambda: _refused(run.port), timeout=5)  # drain over: the listener is gone
        answer = _finish_upload(in_flight, body)  # the in-flight request still completes
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert b'"hash"' in answer

        assert run.wait(timeout=grace) == 0
        assert time.monotonic() - signalled < grace
        log = run.log_text()
        assert '"shutdown.draining"' in log and "Traceback" not in log


def test_a_stalled_request_cannot_hold_shutdown_past_the_grace_period(
    postgres_url: str, tmp_path: Path
) -> None:
    grace = 3.0
    settings = serve_settings(
        postgres_url,
        DHASH_SHUTDOWN_DRAIN_SECONDS="0.5",
        DHASH_SHUTDOWN_GRACE_SECONDS=str(grace),
    )
    with dhash_serve(settings, tmp_path) as run:
        stalled = _start_upload(run.port, photo(302))  # the rest never comes
        run.terminate()
        signalled = time.monotonic()
        assert run.wait(timeout=grace + 5) == 0
        assert time.monotonic() - signalled < grace + 1.5
        stalled.close()


def test_a_second_instance_overlaps_on_the_same_port_without_dropping_requests(
    settings: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    fast = {**settings, "DHASH_SHUTDOWN_DRAIN_SECONDS": "1.0"}
    with dhash_serve(fast, tmp_path, port=port, name="old") as old:
        old_pids = pids_seen(old.url, 10)
        with dhash_serve(fast, tmp_path, port=port, name="new") as new:
            # "ready" above may have been the old instance answering on the shared port; the
            # new one joins the kernel's spread once its worker listens.
            _wait_for(lambda: len(pids_seen(new.url, 20)) == 2, timeout=30)
            assert old_pids < pids_seen(new.url, 40)

            failures: list[str] = []
            answered_by: list[int] = []
            stop = threading.Event()

            def hammer() -> None:
                while not stop.is_set():
                    try:
                        response = fresh_get(f"{new.url}/health")
                        if response.status_code != 200:
                            failures.append(str(response.status_code))
                        answered_by.append(response.json()["pid"])
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))

            worker = threading.Thread(target=hammer)
            worker.start()
            try:
                time.sleep(0.5)
                old.terminate()
                assert old.wait(timeout=30) == 0
                time.sleep(0.5)
            finally:
                stop.set()
                worker.join(10)
            assert failures == []
            assert len(answered_by) > 20
            assert set(answered_by[-10:]).isdisjoint(old_pids)  # the new one serves alone


def test_a_new_instance_takes_no_connection_before_its_index_is_loaded(
    settings: dict[str, str], postgres_server: PostgresServer, tmp_path: Path
) -> None:
    port = free_port()
    later = f"later_{uuid.uuid4().hex[:12]}"  # the new instance's database: absent at first
    waiting = {**serve_settings(postgres_server.url(later)), "DHASH_SHUTDOWN_DRAIN_SECONDS": "0.5"}
    try:
        with dhash_serve(settings, tmp_path, port=port, name="old") as old:
            old_pids = pids_seen(old.url, 10)
            with dhash_serve(waiting, tmp_path, port=port, name="new") as new:
                _wait_for(lambda: "worker.waiting_until_ready" in new.log_text(), timeout=30)
                # Its worker runs but cannot load: every connection still goes to the old one.
                assert pids_seen(new.url, 40) <= old_pids
                with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{later}"')
                _wait_for(lambda: not pids_seen(new.url, 20) <= old_pids, timeout=30)
                assert "worker.listening" in new.log_text()
    finally:
        postgres_server.drop_database(later)


def _run_serve(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DHASH, "serve", *args],
        check=False,
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_refuses_a_port_taken_without_so_reuseport(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = _run_serve(["--port", str(port)], serve_env({}, tmp_path), tmp_path)
    assert done.returncode == 2
    assert f"cannot bind 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_serve_refuses_a_drain_longer_than_the_grace_period(tmp_path: Path) -> None:
    env = serve_env(
        {"DHASH_SHUTDOWN_DRAIN_SECONDS": "30", "DHASH_SHUTDOWN_GRACE_SECONDS": "20"}, tmp_path
    )
    done = _run_serve(["--port", str(free_port())], env, tmp_path)
    assert done.returncode == 2
    assert "DHASH_SHUTDOWN_DRAIN_SECONDS" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
