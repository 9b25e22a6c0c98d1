"""``make demo-hash``: hash and match a generated image set through a real ``dhash serve``.

It builds a reference library of photo-like images, queries it with edited copies (re-encoded,
resized, cropped, brightened) and with unrelated photos, all over HTTP on 127.0.0.1, and prints
what the service decided next to the ground truth and what ``/metrics`` counted. It exits 1 when
the service gets the ground truth wrong, so the demo is also a check.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageEnhance
from rich.console import Console
from rich.table import Table

from dhash_rollout.samples import realistic_photo
from dhash_service import metrics
from dhash_service.client import DhashClient
from dhash_service.errors import Unavailable

LIBRARY_SIZE = 24
UNRELATED = 12
WORKDIR = Path("demo-out/hash")
SERVE_LOG = WORKDIR / "serve.log"
TOKEN = "demo-token"  # noqa: S105 - a throwaway token for a loopback demo server

Edit = Callable[[Image.Image], Image.Image]


def _jpeg(image: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    dx, dy = w // 40, h // 40
    return image.crop((dx, dy, w - dx, h - dy))


EDITS: dict[str, tuple[Edit, int]] = {
    "re-encoded q70": (lambda im: im, 70),
    "resized 50%": (
        lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
        90,
    ),
    "cropped 2.5%": (_crop, 90),
    "brightness +15%": (lambda im: ImageEnhance.Brightness(im).enhance(1.15), 90),
}


@dataclass
class Tally:
    decisions: Counter[str]
    wrong_match: int = 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DHASH_ENV": "development",
        "DHASH_DATA_DIR": str(workdir / "data"),
        "DHASH_LOG_DIR": str(workdir / "logs"),
        "DHASH_API_TOKENS": TOKEN,
        "DHASH_AUTO_MIGRATE": "true",
    }
    env.pop("DHASH_DATABASE_URL", None)
    log = (workdir / "serve.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "dhash_rollout.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_ready(client: DhashClient, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"dhash serve exited with {proc.returncode}; see {SERVE_LOG}")
        try:
            if client.ready().ready:
                return
        except Unavailable:
            pass
        time.sleep(0.2)
    raise SystemExit(f"dhash serve did not become ready in time; see {SERVE_LOG}")


def _metric_lines(text: str) -> list[str]:
    wanted = (
        metrics.HASH_DURATION_COUNT,
        metrics.HASH_DURATION_SUM,
        metrics.EXTRACTIONS_TOTAL,
        metrics.LOW_CONFIDENCE_QUEUE_LENGTH,
        metrics.BUILD_INFO,
    )
    return [ln for ln in text.splitlines() if ln.startswith(wanted)]


def run(workdir: Path, console: Console) -> int:
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    port = _free_port()
    proc = _start_server(workdir, port)
    try:
        with DhashClient(f"http://127.0.0.1:{port}", token=TOKEN) as client:
            _wait_ready(client, proc)
            return _exercise(client, console)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _query(client: DhashClient, data: bytes, name: str, expected_id: int | None, t: Tally) -> None:
    for item in client.ingest(data, filename=name).items:
        t.decisions[item.decision] += 1
        if item.decision == "match" and item.matches[0].image_id != expected_id:
            t.wrong_match += 1


def _query_all(
    client: DhashClient, photos: list[Image.Image], library_ids: list[int]
) -> dict[str, Tally]:
    tallies: dict[str, Tally] = {}
    for name, (edit, quality) in EDITS.items():
        tally = tallies.setdefault(name, Tally(Counter()))
        for i, photo in enumerate(photos):
            _query(client, _jpeg(edit(photo), quality), f"{name}-{i}.jpg", library_ids[i], tally)
    unrelated = tallies.setdefault("unrelated photos", Tally(Counter()))
    for j in range(UNRELATED):
        photo = realistic_photo(1024, 768, seed=5000 + j)
        _query(client, _jpeg(photo), f"new-{j}.jpg", None, unrelated)
    # A container: each image inside a ZIP is extracted and matched on its own.
    zipped = tallies.setdefault("inside a ZIP", Tally(Counter()))
    for i in range(3):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr(f"album/photo-{i}.jpg", _jpeg(photos[i], 75))
        _query(client, buf.getvalue(), f"album-{i}.zip", library_ids[i], zipped)
    return tallies


def _report(tallies: dict[str, Tally], console: Console) -> int:
    table = Table(title="Decisions against ground truth")
    for col in ("query set", "expected", "match", "review", "new", "wrong match"):
        table.add_column(col, justify="left" if col in ("query set", "expected") else "right")
    failures = 0
    for name, tally in tallies.items():
        expected = "new" if name == "unrelated photos" else "match"
        d = tally.decisions
        table.add_row(
            name, expected, str(d["match"]), str(d["review"]), str(d["new"]), str(tally.wrong_match)
        )
        # A review is never a failure: it is the service asking a person, as designed.
        failures += tally.wrong_match + (d["new"] if expected == "match" else d["match"])
    console.print(table)
    return failures


def _exercise(client: DhashClient, console: Console) -> int:
    started = time.perf_counter()
    photos = [realistic_photo(1024, 768, seed=1000 + i) for i in range(LIBRARY_SIZE)]
    library_ids = [
        client.ingest(_jpeg(p), filename=f"library-{i:02d}.jpg", library=True).items[0].image_id
        for i, p in enumerate(photos)
    ]
    console.print(f"library: {len(library_ids)} photos stored as reference images")
    failures = _report(_query_all(client, photos, library_ids), console)

    pending = client.review_items(status="pending")
    console.print(f"review queue: {len(pending)} low-confidence item(s) pending")
    if pending:
        resolved = client.resolve_review(pending[0].id, "confirm", reviewer="demo")
        console.print(f"  confirmed review item {resolved.id} as reviewer 'demo'")

    console.print("/metrics (excerpt):")
    for line in _metric_lines(client.metrics_text()):
        console.print(f"  {line}", highlight=False)
    console.print(f"done in {time.perf_counter() - started:.1f}s")
    if failures:
        console.print(f"[red]FAILED[/red]: {failures} decision(s) contradict the ground truth")
        return 1
    console.print("[green]OK[/green]: every edited copy found its original, no false match")
    return 0


def main() -> int:
    console = Console()
    return run(WORKDIR.resolve(), console)


if __name__ == "__main__":
    sys.exit(main())
