"""The demo's traffic: generated photos ingested the whole time, reads beside them, every answer
counted and every acknowledged image id kept, so the end can say "failed requests: N" and check
that each acknowledged write still exists after the rollback.

Each request goes on a fresh connection (``Connection: close``), the worst case for a switch:
every request meets whichever process listens at that instant. Any exception or non-2xx answer
is a failed request, recorded with what it was. Ingest threads send a new photo each time
(``samples.realistic_photo`` with a unique seed: distinct bytes, never a duplicate); one reader
thread alternates ``GET /health`` and a library search.
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
from urllib.parse import urlsplit

from dhash_rollout.samples import realistic_photo

PHOTO_SIZE = (160, 120)
READ_PAUSE_SECONDS = 0.05  # the reader's pace: steady, without crowding two shared cores
REQUEST_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True)
class Ack:
    """One acknowledged ingest: when (epoch seconds, at the answer) and the ids it stored."""

    at: float
    image_ids: tuple[int, ...]


@dataclass
class LoadResult:
    requests: int = 0
    failures: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    acks: list[Ack] = field(default_factory=list)
    # What /health said serves, at each change (epoch seconds, version): who served when.
    versions: list[tuple[float, str]] = field(default_factory=list)
    started: float = 0.0  # epoch seconds
    ended: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def image_ids(self) -> list[int]:
        return sorted({i for ack in self.acks for i in ack.image_ids})

    def acked_between(self, start: float, end: float) -> int:
        return sum(1 for ack in self.acks if start <= ack.at <= end)

    def served(self, version: str) -> tuple[float, float] | None:
        """From the first to the last ``/health`` answer naming ``version`` (epoch seconds)."""
        seen = [at for at, v in self.versions if v == version]
        if not seen:
            return None
        last_change = seen[-1]
        later = [at for at, _ in self.versions if at > last_change]
        return seen[0], later[0] if later else self.ended


def photo_jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    realistic_photo(*PHOTO_SIZE, seed=seed).save(out, "JPEG", quality=85)
    return out.getvalue()


def multipart(data: bytes, filename: str, ctype: str = "image/jpeg") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {ctype}\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), (
        f"multipart/form-data; boundary={boundary}"
    )


class LoadGenerator:
    """``with LoadGenerator(url, token) as load:`` runs until the block ends (or the cap)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        ingest_threads: int = 4,
        seed_base: int = 100_000,
        max_seconds: float = 900.0,
    ) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.token = token
        self.ingest_threads = ingest_threads
        self.seed_base = seed_base
        self.max_seconds = max_seconds
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deadline = 0.0

    # --- one request ------------------------------------------------------------------------
    def _request(
        self, method: str, path: str, body: bytes | None = None, ctype: str | None = None
    ) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_SECONDS)
        try:
            headers = {"Connection": "close", "Authorization": f"Bearer {self.token}"}
            if ctype:
                headers["Content-Type"] = ctype
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def _count(self, what: str, status: int | None, error: str | None = None) -> None:
        with self._lock:
            self.result.requests += 1
            # When, on the load's clock (the story's "from t+N s"), tells which switch it met.
            when = f"{what} at t+{time.time() - self.result.started:.1f} s"
            if status is not None:
                self.result.statuses[status] += 1
                if not 200 <= status < 300:
                    self.result.failures.append(f"{when}: HTTP {status}")
            else:
                self.result.failures.append(f"{when}: {error}")

    def _ingest(self, seed: int) -> None:
        body, ctype = multipart(photo_jpeg(seed), f"load-{seed}.jpg")
        try:
            status, raw = self._request("POST", "/v1/images", body, ctype)
        except Exception as exc:  # every way a request can fail counts
            self._count("ingest", None, f"{type(exc).__name__}: {exc}")
            return
        if status == 201:
            try:
                ids = tuple(int(item["image_id"]) for item in json.loads(raw)["items"])
            except (ValueError, KeyError, TypeError) as exc:
                self._count("ingest", None, f"unreadable 201 answer: {exc}")
                return
            with self._lock:
                self.result.acks.append(Ack(time.time(), ids))
        self._count("ingest", status)

    def _read(self, n: int) -> None:
        what, path = (
            ("health", "/health")
            if n % 2
            else ("search", "/v1/search?hash=0123456789abcdef&radius=4")
        )
        try:
            status, raw = self._request("GET", path)
        except Exception as exc:  # every way a request can fail counts
            self._count(what, None, f"{type(exc).__name__}: {exc}")
            return
        if what == "health" and status == 200:
            try:
                self._saw(str(json.loads(raw)["version"]))
            except (ValueError, KeyError, TypeError):
                self._count(what, None, "a 200 answer without a version")
                return
        self._count(what, status)

    def _saw(self, version: str) -> None:
        with self._lock:
            versions = self.result.versions
            if not versions or versions[-1][1] != version:
                versions.append((time.time(), version))

    # --- threads ----------------------------------------------------------------------------
    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _ingest_loop(self, thread: int) -> None:
        n = 0
        while self._running():
            n += 1
            self._ingest(self.seed_base + thread * 1_000_000 + n)

    def _read_loop(self) -> None:
        n = 0
        while self._running():
            n += 1
            self._read(n)
            self._stop.wait(READ_PAUSE_SECONDS)

    def snapshot(self) -> tuple[int, int, int]:
        """Requests, failed requests and acknowledged ingests so far (for progress lines)."""
        with self._lock:
            return self.result.requests, self.result.failed, len(self.result.acks)

    def __enter__(self) -> LoadGenerator:
        self._deadline = time.monotonic() + self.max_seconds
        self.result.started = time.time()
        self._threads = [
            threading.Thread(target=self._ingest_loop, args=(i,), daemon=True)
            for i in range(self.ingest_threads)
        ]
        self._threads.append(threading.Thread(target=self._read_loop, daemon=True))
        for worker in self._threads:
            worker.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        for worker in self._threads:
            worker.join(REQUEST_TIMEOUT_SECONDS + 5)
        if not self.result.ended:
            self.result.ended = time.time()
        return self.result

    def __exit__(self, *_exc: object) -> None:
        self.stop()
