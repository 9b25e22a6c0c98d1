"""A bounded load generator for the zero-downtime tests: 127.0.0.1 only, a few threads, a hard
time limit, every request on a fresh connection (the worst case for a listener that closes).

Each thread loops over: ``GET /health``, ``GET /v1/search`` (store and index path) and, every
``ingest_every`` requests, ``POST /v1/images`` with a new image. Any exception or non-2xx answer
is a failure, recorded with what it was; every acknowledged ingest (201) is remembered with the
image ids the service returned, so a test can check none of them is lost.
"""

from __future__ import annotations

import http.client
import io
import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from PIL import Image


def unique_png(seed: int, size: int = 48) -> bytes:
    """A small PNG whose pixels depend on ``seed`` (distinct bytes, distinct hashes)."""
    image = Image.new("L", (size, size))
    image.putdata([((x * (seed % 7 + 1)) ^ (y * (seed % 13 + 3)) ^ seed) % 256
                   for y in range(size) for x in range(size)])  # fmt: skip
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class LoadResult:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    ingested: dict[str, list[int]] = field(default_factory=dict)  # content sha256 -> image ids
    seconds: float = 0.0
    # (began, ended) wall-clock time of each failure, in the order of ``failures``: a test
    # compares them with the journal's timestamps (a documented outage window)
    failure_spans: list[tuple[float, float]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)


class LoadGenerator:
    def __init__(
        self,
        port: int,
        token: str | None,
        *,
        threads: int = 3,
        max_seconds: float = 20.0,
        ingest_every: int = 5,
        seed_base: int = 0,
        failure_pause: float = 0.0,
    ) -> None:
        """``failure_pause``: seconds a thread waits after a failed request. A refused
        connection fails at once, so through an outage (a data restore) the threads would spin
        on the CPU the restore needs; a few milliseconds keep the outage's edges exact."""
        assert threads <= 4 and max_seconds <= 60
        self.port = port
        self.token = token
        self.threads = threads
        self.max_seconds = max_seconds
        self.ingest_every = ingest_every
        self.seed_base = seed_base
        self.failure_pause = failure_pause
        self.result = LoadResult()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._started = 0.0

    def _request(
        self, method: str, path: str, body: bytes | None = None, ctype: str | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            headers = {"Connection": "close"}
            if ctype:
                headers["Content-Type"] = ctype
            if self.token:
                headers["Authorization"] = f"Bearer {self.token}"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _one(self, thread: int, n: int) -> bool:
        """One request; whether it succeeded."""
        kind = (
            "ingest"
            if self.ingest_every and n % self.ingest_every == 0
            else ("health", "search")[n % 2]
        )
        began = time.time()
        try:
            if kind == "health":
                status, _ = self._request("GET", "/health")
            elif kind == "search":
                status, _ = self._request("GET", "/v1/search?hash=0123456789abcdef&radius=2")
            else:
                seed = self.seed_base + thread * 1_000_000 + n
                body, ctype = multipart(unique_png(seed), f"load-{seed}.png")
                status, raw = self._request("POST", "/v1/images", body, ctype)
                if status == 201:
                    report = json.loads(raw)
                    ids = [int(item["image_id"]) for item in report["items"]]
                    with self._lock:
                        self.result.ingested[report["sha256"]] = ids
        except Exception as exc:  # every way a request can fail counts
            with self._lock:
                self.result.requests += 1
                self.result.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
                self.result.failure_spans.append((began, time.time()))
            return False
        with self._lock:
            self.result.requests += 1
            self.result.statuses[status] += 1
            if not 200 <= status < 300:
                self.result.failures.append(f"{kind}: HTTP {status}")
                self.result.failure_spans.append((began, time.time()))
                return False
        return True

    def _run(self, thread: int) -> None:
        n = 0
        while not self._stop.is_set() and time.monotonic() - self._started < self.max_seconds:
            n += 1
            if not self._one(thread, n) and self.failure_pause:
                self._stop.wait(self.failure_pause)

    def __enter__(self) -> LoadGenerator:
        self._started = time.monotonic()
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, args=(i,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(30)
        self.result.seconds = time.monotonic() - self._started
