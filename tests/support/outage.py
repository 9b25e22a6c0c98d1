"""What clients see while something fails under them: a bounded upload load and a probe, both
recording every answer with its time, for the reliability tests.

``UploadLoad`` posts a new image per request on a fresh connection from a few threads (127.0.0.1
only, a hard time cap) and keeps each answer: when, status, ``Retry-After`` and the image ids of
an acknowledged (201) upload; a request that got no HTTP answer at all is kept with status 0 and
the error. ``Probe`` asks ``/health`` and ``/ready`` every ``interval`` seconds and keeps the
status and body of each answer.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass

from tests.support.load import multipart, unique_png


@dataclass(frozen=True)
class Answer:
    at: float  # seconds since the load started
    status: int  # 0: no HTTP answer (connection refused, reset...)
    retry_after: str | None = None
    ids: tuple[int, ...] = ()
    detail: str = ""


def _request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


class _Loop:
    """Threads that call ``step`` until stopped or ``max_seconds`` are over."""

    def __init__(self, threads: int, max_seconds: float) -> None:
        assert threads <= 4 and max_seconds <= 60
        self.threads = threads
        self.max_seconds = max_seconds
        self.started = 0.0
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def now(self) -> float:
        return time.monotonic() - self.started

    def step(self, thread: int, n: int) -> None:
        raise NotImplementedError

    def _run(self, thread: int) -> None:
        n = 0
        while not self._stop.is_set() and self.now() < self.max_seconds:
            n += 1
            self.step(thread, n)

    def start(self, started: float | None = None) -> None:
        """Start the threads; ``started`` (a ``time.monotonic()``) puts loops on one clock."""
        self.started = started or time.monotonic()
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)


class UploadLoad(_Loop):
    def __init__(
        self,
        port: int,
        token: str,
        *,
        threads: int = 3,
        max_seconds: float = 40.0,
        seed_base: int = 0,
    ) -> None:
        super().__init__(threads, max_seconds)
        self.port = port
        self.token = token
        self.seed_base = seed_base
        self.answers: list[Answer] = []

    def step(self, thread: int, n: int) -> None:
        seed = self.seed_base + thread * 1_000_000 + n
        body, ctype = multipart(unique_png(seed), f"outage-{seed}.png")
        headers = {"Content-Type": ctype, "Authorization": f"Bearer {self.token}"}
        try:
            status, response_headers, raw = _request(self.port, "POST", "/v1/images", body, headers)
        except (OSError, http.client.HTTPException) as exc:
            answer = Answer(self.now(), 0, detail=f"{type(exc).__name__}: {exc}")
        else:
            ids: tuple[int, ...] = ()
            if status == 201:
                ids = tuple(int(item["image_id"]) for item in json.loads(raw)["items"])
            answer = Answer(
                self.now(), status, response_headers.get("retry-after"), ids, raw[:300].decode()
            )
        with self.lock:
            self.answers.append(answer)

    def acknowledged(self) -> set[int]:
        return {i for answer in self.answers for i in answer.ids}


class Probe(_Loop):
    def __init__(self, port: int, *, interval: float = 0.2, max_seconds: float = 60.0) -> None:
        super().__init__(1, max_seconds)
        self.port = port
        self.interval = interval
        self.health: list[Answer] = []
        self.ready: list[Answer] = []

    def step(self, thread: int, n: int) -> None:
        for path, into in (("/health", self.health), ("/ready", self.ready)):
            try:
                status, _headers, raw = _request(self.port, "GET", path)
                answer = Answer(self.now(), status, detail=raw[:500].decode())
            except (OSError, http.client.HTTPException) as exc:
                answer = Answer(self.now(), 0, detail=f"{type(exc).__name__}: {exc}")
            with self.lock:
                into.append(answer)
        time.sleep(self.interval)
