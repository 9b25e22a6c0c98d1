"""SIGTERM answers everything the worker accepted (``/ready`` 503 while it drains), and the exit
code says whether it had to kill.

Regression: with one slow document in flight, 28 of 50 queued requests got "connection closed
without response" at shutdown, and the supervisor killed the worker and still exited 0.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.hostile import pdf_nested_forms
from tests.support.live_server import dhash_serve
from tests.support.postgres import PostgresServer

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

TOKEN = "stop-test-token-9a"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def slow_png(seed: int) -> bytes:
    """A 16 MP noise PNG: about a quarter of a second to decode and hash."""
    pixels = np.random.default_rng(seed).integers(0, 256, (4000, 4000), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def settings(postgres_server: PostgresServer, name: str, **extra: str) -> dict[str, str]:
    return {
        "DHASH_DATABASE_URL": postgres_server.url(postgres_server.create_database(name)),
        "DHASH_API_TOKENS": TOKEN,
        "DHASH_AUTO_MIGRATE": "true",
        "DHASH_ENV": "test",
        "DHASH_SHUTDOWN_DRAIN_SECONDS": "0.5",
        "DHASH_SHUTDOWN_GRACE_SECONDS": "4",
        "DHASH_EXTRACTION_CONCURRENCY": "1",
        "DHASH_ADMISSION_QUEUE_SECONDS": "30",
        "DHASH_REQUEST_TIME_BUDGET_SECONDS": "30",
        "DHASH_DOCUMENT_TIME_BUDGET_SECONDS": "30",
        "DHASH_MAX_UPLOAD_BYTES": str(32 * 1024 * 1024),
        **extra,
    }


def small_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


IN_FLIGHT = 100  # requests sent before SIGTERM, as the probe by hand (some slow)


def test_sigterm_answers_every_queued_request_and_exits_zero(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """100 requests in flight (a document running past the grace period, nine slow images, the
    rest small, all queued behind one extraction slot): every one is answered 200 or 503, none
    dropped; ``/ready`` is 503 while the worker drains; the exit is 0."""
    slow = [slow_png(i) for i in range(3)]
    document = pdf_nested_forms(7, 10)  # runs far past the grace period
    outcomes: list[str] = []
    ready: list[tuple[float, float, str]] = []  # sent, answered, what
    lock = threading.Lock()
    done = threading.Event()

    def send(data: bytes) -> None:
        try:
            response = httpx.post(f"{run.url}/v1/hash", content=data, headers=AUTH, timeout=30)
            outcome = str(response.status_code)
        except httpx.HTTPError as exc:
            outcome = f"dropped: {type(exc).__name__}"
        with lock:
            outcomes.append(outcome)

    def probe() -> None:
        while not done.is_set():
            sent = time.monotonic()
            try:
                response = httpx.get(f"{run.url}/ready", timeout=2)
                # 503 also while saturated (requests queue for a slot): the check says which
                draining = response.json()["checks"].get("shutdown") == "draining"
                answer = f"{response.status_code}{' draining' if draining else ''}"
            except httpx.HTTPError:
                answer = "closed"
            ready.append((sent, time.monotonic(), answer))
            time.sleep(0.02)

    with dhash_serve(settings(postgres_server, "stop_ok"), tmp_path) as run:
        bodies = [document] + [slow[i % 3] for i in range(9)]
        bodies += [small_png(i) for i in range(IN_FLIGHT - len(bodies))]
        threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
        for thread in threads:
            thread.start()
            time.sleep(0.01)
        time.sleep(1.0)  # the document decodes, the rest queue behind one extraction slot
        prober = threading.Thread(target=probe)
        prober.start()
        # one /ready answer at least before the signal (a loaded machine may take over 0.2 s)
        deadline = time.monotonic() + 10
        while not ready and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        terminating = time.monotonic()
        run.terminate()
        signalled = time.monotonic()
        for thread in threads:
            thread.join(30)
        code = run.wait(timeout=15)
        took = time.monotonic() - signalled
        done.set()
        prober.join(5)
    assert len(outcomes) == len(bodies) == IN_FLIGHT
    assert not [o for o in outcomes if o.startswith("dropped")], outcomes
    assert set(outcomes) <= {"200", "503"} and "503" in outcomes, outcomes
    assert code == 0 and took < 4 + 2.5, (code, took)  # the grace, then the processes' exits
    before = [a for _sent, answered, a in ready if answered < terminating]
    after = [a for sent, _answered, a in ready if sent > signalled]
    assert before and "closed" not in before and not [a for a in before if "draining" in a]
    # Once the signal reaches the worker: 503 "draining" (never ready again), then the listener
    # is closed.
    assert "503 draining" in after, after
    drained = after[after.index("503 draining") :]
    assert set(drained) <= {"503 draining", "closed"}, after


def test_a_worker_killed_at_the_grace_period_makes_serve_exit_non_zero(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    # A wedged worker (stopped here, so it can neither answer nor exit) outlives the grace.
    with dhash_serve(settings(postgres_server, "stop_kill"), tmp_path) as run:
        worker = int(httpx.get(f"{run.url}/health").json()["pid"])
        os.kill(worker, signal.SIGSTOP)
        run.terminate()
        code = run.wait(timeout=20)
        log = run.log_text()
    assert code != 0
    assert '"shutdown.worker_killed"' in log and "did not stop within" in log
