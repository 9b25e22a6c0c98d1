"""Service load benchmark: `dhash serve --workers 2` against its anchor, `--workers 1`.

Run with ``make bench-service``. Starts a throw-away PostgreSQL (``tests/support/postgres.py``:
loopback, fsync off) and two real ``dhash serve`` instances on 127.0.0.1 (one and two workers,
each with its own database), then posts 1920x1080 photo-like JPEGs to ``POST /v1/images`` (the
whole path: extract, hash, match, store) from 1, 8, 32 and 64 concurrent clients. Every request
sends different bytes (a unique JPEG comment segment), so none is answered as a duplicate.

Phases are interleaved: each repetition runs every concurrency level against both instances,
alternating which goes first; figures are medians over repetitions. Per phase: throughput,
client-side p50/p95/p99 latency, and the P95 hash time computed from the ``/metrics`` histogram
delta exactly as PromQL ``histogram_quantile`` does. The histogram must count exactly one
observation per successful request, and at concurrency 1 (no queueing) the server's P95 hash time
must sit below, and close to, the client's P95 latency: that is the agreement check, and the run
exits 1 if it fails. Bounded: a fixed request count per phase, a time cap per phase and overall.
The client runs on the same two cores as the servers, so absolute figures are a floor.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.corpus import photo_jpeg  # noqa: E402
from tests.support.postgres import running_postgres  # noqa: E402

DHASH = str(Path(sys.executable).parent / "dhash")
TOKEN = "bench-token"
LEVELS = (1, 8, 32, 64)
REQUESTS = {1: 24, 8: 64, 32: 96, 64: 128}
REPETITIONS = 3
PHASE_CAP_SECONDS = 45.0
TOTAL_CAP_SECONDS = 270.0
BASE_IMAGES = 8
RESULTS = REPO / "bench" / "RESULTS.md"
SECTION = "## Service load (`make bench-service`)"


def unique(jpeg: bytes, n: int) -> bytes:
    """The same picture, different bytes: a COM segment right after SOI."""
    comment = f"bench request {n}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Instance:
    workers: int
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def start(workers: int, database_url: str, scratch: Path) -> Instance:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    env.update(
        DHASH_DATABASE_URL=database_url,
        DHASH_AUTO_MIGRATE="true",
        DHASH_API_TOKENS=TOKEN,
        DHASH_ENV="bench",
        DHASH_DATA_DIR=str(scratch),
    )
    log = (scratch / f"serve-{workers}w.log").open("wb")
    process = subprocess.Popen(
        [DHASH, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Instance(workers, port, process)


def _workers_listening(instance: Instance, tries: int = 20) -> int:
    """Distinct worker pids on fresh connections: a worker listens only once it is ready."""
    pids = {
        httpx.get(f"{instance.url}/health", timeout=5, headers={"Connection": "close"}).json()[
            "pid"
        ]
        for _ in range(tries)
    }
    return len(pids)


def wait_ready(instance: Instance, timeout: float = 90.0) -> None:
    """Until ``/ready`` and every worker takes connections (else 2 workers would start as 1)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if instance.process.poll() is not None:
            raise SystemExit(f"dhash serve --workers {instance.workers} exited early")
        try:
            ready = httpx.get(f"{instance.url}/ready", timeout=5).status_code == 200
            if ready and _workers_listening(instance) >= instance.workers:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"dhash serve --workers {instance.workers} not ready in {timeout}s")


def stop(instance: Instance) -> None:
    if instance.process.poll() is None:
        instance.process.send_signal(signal.SIGTERM)
        try:
            instance.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(instance.process.pid, signal.SIGKILL)
            instance.process.wait(10)


# --- the histogram, as PromQL reads it -----------------------------------------------------------


def hash_histogram(url: str) -> dict[float, float]:
    """Cumulative bucket counts of dhash_hash_duration_seconds by upper bound."""
    text = httpx.get(f"{url}/metrics", timeout=30).text
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "dhash_hash_duration_seconds_bucket":
                buckets[float(sample.labels["le"])] = sample.value
    return buckets


def histogram_quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding the rank."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total == 0:
        return float("nan")
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


# --- load -----------------------------------------------------------------------------------------


@dataclass
class Phase:
    workers: int
    clients: int
    ok: int
    errors: int
    wall: float
    latencies: list[float]
    hash_p95: float
    hash_count: float

    @property
    def throughput(self) -> float:
        return self.ok / self.wall

    def latency(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _load(url: str, payloads: list[bytes], clients: int) -> tuple[list[float], int, float]:
    latencies: list[float] = []
    errors = 0
    queue = list(reversed(payloads))
    cap = time.monotonic() + PHASE_CAP_SECONDS
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "image/jpeg"}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:

        async def one_client() -> None:
            nonlocal errors
            while queue and time.monotonic() < cap:
                body = queue.pop()
                started = time.perf_counter()
                try:
                    response = await client.post("/v1/images", content=body, headers=headers)
                    ok = response.status_code == 201
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        return latencies, errors, time.perf_counter() - began


def run_phase(instance: Instance, clients: int, payloads: list[bytes]) -> Phase:
    before = hash_histogram(instance.url)
    latencies, errors, wall = asyncio.run(_load(instance.url, payloads, clients))
    after = hash_histogram(instance.url)
    delta = {le: after[le] - before.get(le, 0.0) for le in after}
    return Phase(
        workers=instance.workers,
        clients=clients,
        ok=len(latencies),
        errors=errors,
        wall=wall,
        latencies=latencies,
        hash_p95=histogram_quantile(0.95, delta),
        hash_count=delta[float("inf")],
    )


# --- report ---------------------------------------------------------------------------------------


def med(values: list[float]) -> float:
    return statistics.median(values)


def ratios(phases: list[Phase]) -> list[float]:
    out = []
    for clients in LEVELS:
        one = [p.throughput for p in phases if p.workers == 1 and p.clients == clients]
        two = [p.throughput for p in phases if p.workers == 2 and p.clients == clients]
        if one and two:
            out.append(med(two) / med(one))
    return out


def hash_growth(phases: list[Phase]) -> float:
    def p95(clients: int) -> float:
        return med([p.hash_p95 for p in phases if p.workers == 1 and p.clients == clients])

    return p95(LEVELS[-1]) / p95(LEVELS[0]) if phases else float("nan")


def report(phases: list[Phase], reps_done: int, load: str) -> tuple[str, bool]:
    by: dict[tuple[int, int], list[Phase]] = {}
    for phase in phases:
        by.setdefault((phase.workers, phase.clients), []).append(phase)
    lines = [
        "| clients | workers | req/s | p50 ms | p95 ms | p99 ms | hash P95 ms (/metrics) "
        "| 2w / 1w req/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for clients in LEVELS:
        one = by.get((1, clients), [])
        two = by.get((2, clients), [])
        for workers, runs in ((1, one), (2, two)):
            if not runs:
                continue
            ratio = ""
            if workers == 2 and one:
                ratio = (
                    f"**{med([p.throughput for p in two]) / med([p.throughput for p in one]):.2f}**"
                )
            lines.append(
                f"| {clients} | {workers} | {med([p.throughput for p in runs]):.1f} "
                f"| {med([p.latency(0.5) for p in runs]) * 1000:.0f} "
                f"| {med([p.latency(0.95) for p in runs]) * 1000:.0f} "
                f"| {med([p.latency(0.99) for p in runs]) * 1000:.0f} "
                f"| {med([p.hash_p95 for p in runs]) * 1000:.0f} | {ratio} |"
            )
    counts_exact = all(p.hash_count == p.ok for p in phases)
    errors = sum(p.errors for p in phases)
    sequential = [p for p in phases if p.clients == 1]
    agreement = [p.hash_p95 / p.latency(0.95) for p in sequential]
    agrees = bool(agreement) and all(0.2 < a <= 1.05 for a in agreement)
    requests = sum(p.ok for p in phases)
    spread = ratios(phases)
    notes = [
        "",
        f"{reps_done} interleaved repetitions, {requests} successful requests, {errors} errors; "
        f"load average at start {load}. "
        "Histogram observations equal successful requests in every phase: "
        f"**{'yes' if counts_exact else 'NO'}**. At 1 client (no queueing) the /metrics hash "
        f"P95 is {min(agreement, default=0):.2f} to {max(agreement, default=0):.2f} of the "
        "client's P95 latency (the rest is upload, matching and the database write): "
        f"**{'agrees' if agrees else 'DISAGREES'}**.",
        "",
        "Reading: one worker already decodes and hashes on both cores (requests run in a thread "
        "pool and Pillow releases the GIL while decoding), so on two cores shared with the "
        "client, PostgreSQL and other jobs a second worker adds contention rather than capacity: "
        f"2 workers / 1 worker = {min(spread, default=0):.2f} to {max(spread, default=0):.2f} "
        "in throughput. What a second worker buys here is isolation (a crash or a stuck request "
        "takes half the capacity, not all of it); more throughput needs more cores than one "
        "process keeps busy, which this machine cannot show. Each worker extracts at most "
        "`DHASH_EXTRACTION_CONCURRENCY` uploads at once (default: the CPUs divided among the "
        "workers), so the hash time measures work, not queueing: with 1 worker its P95 at "
        f"{LEVELS[-1]} clients is {hash_growth(phases):.2f}x its P95 at 1 client, while the "
        "queueing shows in request latency, where it belongs.",
    ]
    wrapped = [textwrap.fill(n, 100) if n and not n.startswith("|") else n for n in notes]
    return "\n".join(lines + wrapped), counts_exact and agrees


def write_results(table: str) -> None:
    text = RESULTS.read_text(encoding="utf-8")
    today = time.strftime("%Y-%m-%d")
    intro = (
        f"`bench/bench_service.py`, run {today} on the shared 2-core machine (other engineers' "
        "jobs running too): `dhash serve` on 127.0.0.1 with PostgreSQL (fsync off), "
        "`POST /v1/images` of 1920x1080 photo-like JPEGs (~320 KB, unique bytes per request), "
        "the async client on the same cores. Medians over interleaved repetitions; the anchor "
        "is `--workers 1`."
    )
    body = f"{SECTION}\n\n{textwrap.fill(intro, 100)}\n\n{table}\n\n"
    pattern = re.compile(re.escape(SECTION) + r"\n.*?(?=\n## |\Z)", re.S)
    RESULTS.write_text(pattern.sub(lambda _: body.rstrip("\n") + "\n", text), encoding="utf-8")


def main() -> int:
    began = time.monotonic()
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"generating {BASE_IMAGES} 1920x1080 JPEGs ...", flush=True)
    bases = [photo_jpeg(1920, 1080, seed, quality=90) for seed in range(BASE_IMAGES)]
    counter = iter(range(10**9))

    def payloads(n: int) -> list[bytes]:
        return [unique(bases[i % len(bases)], next(counter)) for i in range(n)]

    phases: list[Phase] = []
    reps_done = 0
    with running_postgres() as pg, tempfile.TemporaryDirectory(prefix="dhash-bench-") as tmp:
        instances = []
        for workers in (1, 2):
            database = pg.create_database(f"bench{workers}")
            scratch = Path(tmp) / f"w{workers}"
            scratch.mkdir()
            instances.append(start(workers, pg.url(database), scratch))
        try:
            for instance in instances:
                wait_ready(instance)
                run_phase(instance, 4, payloads(16))  # warm-up: imports, pools, first decodes
            for rep in range(REPETITIONS):
                if time.monotonic() - began > TOTAL_CAP_SECONDS:
                    break
                order = instances if rep % 2 == 0 else instances[::-1]
                for clients in LEVELS:
                    for instance in order:
                        phase = run_phase(instance, clients, payloads(REQUESTS[clients]))
                        phases.append(phase)
                        print(
                            f"rep {rep} workers {phase.workers} clients {clients:>2}: "
                            f"{phase.throughput:6.1f} req/s  p95 {phase.latency(0.95) * 1000:6.0f} "
                            f"ms  hash p95 {phase.hash_p95 * 1000:5.0f} ms  "
                            f"({phase.ok} ok, {phase.errors} errors, "
                            f"{phase.hash_count:.0f} hashed)",
                            flush=True,
                        )
                reps_done += 1
        finally:
            for instance in instances:
                stop(instance)
    table, sound = report(phases, reps_done, load)
    print("\n" + table)
    write_results(table)
    print(f"\nwrote {RESULTS.relative_to(REPO)}; {time.monotonic() - began:.0f} s in all")
    return 0 if sound else 1


if __name__ == "__main__":
    sys.exit(main())
