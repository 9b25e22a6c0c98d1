"""Service load benchmark: `dhash serve --workers 2` against its anchor, `--workers 1`.

Run with ``make bench-service``. Starts a throw-away PostgreSQL (``tests/support/postgres.py``:
loopback, fsync off) and two real ``dhash serve`` instances on 127.0.0.1 (one and two workers,
each with its own database), then posts 1920x1080 photo-like JPEGs to ``POST /v1/images`` (the
whole path: extract, hash, match, store) from 1, 8, 32 and 64 concurrent clients. Every request
sends different bytes (a unique JPEG comment segment), so none is answered as a duplicate.

Phases are interleaved: each repetition runs every concurrency level against both instances,
alternating which goes first; figures are medians over repetitions. Per phase: throughput,
client-side p50/p95/p99 latency, and the p50/P95 hash time computed from the ``/metrics``
histogram delta exactly as PromQL ``histogram_quantile`` does. The histogram must count exactly one
observation per successful request.

Agreement of ``/metrics`` with client-side timings: ``dhash_hash_duration_seconds`` observes, per
extracted image, the wall time of opening, decoding and hashing it (``digest.digest``). So next to
every 1-client phase (no queueing), with the servers idle, this process runs ``digest`` itself on
exactly the payloads that phase posted, with the algorithm and limits the servers were configured
with (the same ``DHASH_*`` environment read by ``Settings``), timing each call with its own clock.
Its p50 and P95 are compared with ``histogram_quantile`` over the phase's bucket delta. The two
agree when the ratio lies within the relative width (upper / lower bound) of the bucket holding the
``/metrics`` quantile: linear interpolation can place a true quantile anywhere in that bucket, so a
smaller disagreement is not measurable from ``/metrics`` at all. The reference runs before the
phase on odd repetitions and after it on even ones, so load drift hits both sides. The run exits 1
if a count or the pooled agreement fails. Bounded: fixed request counts, a time cap per phase and
overall. The client runs on the same two cores as the servers, so absolute figures are a floor.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import httpx
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.corpus import photo_jpeg  # noqa: E402
from tests.support.postgres import running_postgres  # noqa: E402

from dhash_service.config import Settings  # noqa: E402
from dhash_service.digest import digest  # noqa: E402
from dhash_service.extraction import Limits  # noqa: E402
from dhash_service.hashing import configured_algorithm  # noqa: E402

DHASH = str(Path(sys.executable).parent / "dhash")
TOKEN = "bench-token"
LEVELS = (1, 8, 32, 64)
REQUESTS = {1: 48, 8: 64, 32: 96, 64: 128}
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


def server_env(database_url: str, scratch: Path) -> dict[str, str]:
    """The environment a bench server runs with: ours without ``DHASH_*``, plus its settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DHASH_")}
    env.update(
        DHASH_DATABASE_URL=database_url,
        DHASH_AUTO_MIGRATE="true",
        DHASH_API_TOKENS=TOKEN,
        DHASH_ENV="bench",
        DHASH_DATA_DIR=str(scratch),
    )
    return env


def launch(workers: int, env: dict[str, str], log: Path) -> Instance:
    """``dhash serve`` with ``env`` on a free port, its output in ``log``; not yet ready."""
    port = free_port()
    process = subprocess.Popen(
        [DHASH, "serve", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Instance(workers, port, process)


def start(workers: int, database_url: str, scratch: Path) -> Instance:
    return launch(workers, server_env(database_url, scratch), scratch / f"serve-{workers}w.log")


def serve_one_worker(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``dhash serve --workers 1`` with ``env``, once ready (:func:`wait_ready`): (process, url);
    stopped again if it never gets ready."""
    instance = launch(1, env, log)
    try:
        wait_ready(instance)
    except SystemExit:
        stop(instance)
        raise
    return instance.process, instance.url


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


def bucket_of(q: float, buckets: dict[float, float]) -> tuple[float, float]:
    """Bounds (lower, upper] of the bucket holding rank ``q * total``: where the quantile lies."""
    bounds = sorted(buckets)
    rank = q * buckets[bounds[-1]]
    lower = 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            return lower, bound
        lower = bound
    return lower, float("inf")


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


# --- the same work, timed here -------------------------------------------------------------------


class ClientHashTimer:
    """Runs what the server's histogram observes, ``digest``, configured as the servers are."""

    def __init__(self, env: dict[str, str]) -> None:
        with mock.patch.dict(os.environ, env, clear=True):  # exactly what the servers read
            settings = Settings()
        self.algorithm = configured_algorithm(settings.hash_algorithm, settings.hash_size)
        self.limits = Limits.from_settings(settings)

    def time(self, payloads: list[bytes]) -> tuple[list[float], list[float]]:
        """Per extracted image: this process's wall clock around ``digest``, and the item budget.

        The budget (``HashedItem.seconds``) is the very number the server observes; it is
        returned only to show how much of the outside wall time it covers.
        """
        walls: list[float] = []
        budgets: list[float] = []
        for body in payloads:
            started = time.perf_counter()
            result = digest(body, algorithm=self.algorithm, limits=self.limits)
            wall = time.perf_counter() - started
            if len(result.items) != 1 or result.failures:
                raise SystemExit("a bench JPEG did not digest to exactly one image")
            walls.append(wall)
            budgets.append(result.items[0].seconds)
        return walls, budgets


def quantile(q: float, values: list[float]) -> float:
    """Nearest-rank quantile of samples, as the latency columns use."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- load -----------------------------------------------------------------------------------------


@dataclass
class Phase:
    workers: int
    clients: int
    ok: int
    errors: int
    wall: float
    latencies: list[float]
    hash_delta: dict[float, float]
    client_hash: list[float] = field(default_factory=list)  # digest timed here, server idle
    client_budget: list[float] = field(default_factory=list)

    @property
    def hash_count(self) -> float:
        return self.hash_delta[float("inf")]

    @property
    def hash_p95(self) -> float:
        return histogram_quantile(0.95, self.hash_delta)

    @property
    def throughput(self) -> float:
        return self.ok / self.wall

    def latency(self, q: float) -> float:
        return quantile(q, self.latencies)


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
        hash_delta=delta,
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


@dataclass
class Agreement:
    """One hash-time quantile: ``/metrics`` (with its bucket) against this process's clock."""

    q: float
    server: float
    bucket: tuple[float, float]
    client: float

    @property
    def ratio(self) -> float:
        return self.server / self.client

    @property
    def tolerance(self) -> float:
        """Upper / lower bound of the bucket: how far interpolation alone can be off."""
        lower, upper = self.bucket
        return upper / lower if lower > 0 and math.isfinite(upper) else float("inf")

    @property
    def same_bucket(self) -> bool:
        lower, upper = self.bucket
        return lower < self.client <= upper

    @property
    def agrees(self) -> bool:
        if self.same_bucket:
            return True
        # An open-ended bucket (first or +Inf) bounds nothing: only the same bucket agrees.
        return math.isfinite(self.tolerance) and (
            1 / self.tolerance <= self.ratio <= self.tolerance
        )

    def cells(self) -> str:
        lower, upper = self.bucket
        return (
            f"{self.server * 1000:.1f} ({lower * 1000:g}-{upper * 1000:g}) "
            f"| {self.client * 1000:.1f} | {self.ratio:.2f} (≤{self.tolerance:.2f}x)"
        )


def agreement(q: float, delta: dict[float, float], client: list[float]) -> Agreement:
    return Agreement(q, histogram_quantile(q, delta), bucket_of(q, delta), quantile(q, client))


def pooled(phases: list[Phase]) -> tuple[dict[float, float], list[float], list[float]]:
    """Bucket deltas summed, and client timings joined, over phases (all at 1 client)."""
    delta: dict[float, float] = {}
    walls: list[float] = []
    budgets: list[float] = []
    for phase in phases:
        for le, count in phase.hash_delta.items():
            delta[le] = delta.get(le, 0.0) + count
        walls += phase.client_hash
        budgets += phase.client_budget
    return delta, walls, budgets


def agreement_table(phases: list[Phase]) -> tuple[list[str], bool, list[str]]:
    """Per worker count, pooled over repetitions: p50 and P95 from /metrics vs client-side."""
    lines = [
        "| 1 client, workers | hashes (server / client) | /metrics p50 ms (bucket) | client p50 ms "
        "| ratio (tolerance) | /metrics P95 ms (bucket) | client P95 ms | ratio (tolerance) "
        "| agrees |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    sound = True
    for workers in (1, 2):
        runs = [p for p in phases if p.workers == workers and p.clients == 1 and p.client_hash]
        if not runs:
            sound = False
            continue
        delta, walls, _ = pooled(runs)
        p50, p95 = agreement(0.5, delta, walls), agreement(0.95, delta, walls)
        agrees = p50.agrees and p95.agrees
        sound = sound and agrees
        lines.append(
            f"| {workers} | {delta[float('inf')]:.0f} / {len(walls)} | {p50.cells()} "
            f"| {p95.cells()} | **{'yes' if agrees else 'NO'}** |"
        )
    singles = [p for p in phases if p.clients == 1 and p.client_hash]
    each = [agreement(q, p.hash_delta, p.client_hash).agrees for p in singles for q in (0.5, 0.95)]
    ratios95 = [agreement(0.95, p.hash_delta, p.client_hash).ratio for p in singles]
    _, walls, budgets = pooled(singles)
    facts = [
        f"Phase by phase, {sum(each)} of {len(each)} p50/P95 comparisons agree by the same rule; "
        f"P95 ratios {min(ratios95, default=0):.2f} to {max(ratios95, default=0):.2f}.",
        f"The item budget (the figure the server observes) is {med(budgets) / med(walls):.2f} of "
        "the wall time around `digest` at the median, in this process"
        if walls
        else "no client-side timings",
    ]
    return lines, sound, facts


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
    share = [p.hash_p95 / p.latency(0.95) for p in sequential]
    below = bool(share) and all(s <= 1.05 for s in share)  # sanity: a part below its whole
    table, agrees, facts = agreement_table(phases)
    _, idle, _ = pooled([p for p in sequential if p.workers == 1])
    busiest = med([p.hash_p95 for p in phases if p.workers == 1 and p.clients == LEVELS[-1]] or [0])
    requests = sum(p.ok for p in phases)
    spread = ratios(phases)
    notes = [
        "",
        f"{reps_done} interleaved repetitions, {requests} successful requests, {errors} errors; "
        f"load average at start {load}. "
        "Histogram observations equal successful requests in every phase: "
        f"**{'yes' if counts_exact else 'NO'}**. At 1 client the /metrics hash P95 is "
        f"{min(share, default=0):.2f} to {max(share, default=0):.2f} of the client's P95 request "
        "latency (the rest is upload, matching and the database write).",
        "",
        "Hash time, /metrics against client-side timings: beside every 1-client phase, with the "
        "servers idle, the bench process ran `digest` (what the histogram observes: open, decode "
        "and hash one image) on the very payloads of that phase, with the servers' algorithm and "
        "limits, timed by its own clock; reference before the phase on odd repetitions, after "
        "it on even ones. /metrics quantiles are `histogram_quantile` over the phase's bucket "
        "deltas, pooled over repetitions; the bucket holding each is given in ms. They agree "
        "when the ratio is within the bucket's own width (upper / lower bound), the most that "
        "linear interpolation inside one bucket can be off by:",
        "",
        *table,
        "",
        " ".join(facts) + ".",
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
        f"{LEVELS[-1]} clients is {hash_growth(phases):.2f}x its P95 at 1 client "
        f"({busiest / quantile(0.95, idle) if idle else float('nan'):.2f}x the idle client-side "
        "P95: two extractions share the cores with the client and PostgreSQL), while the "
        "queueing shows in request latency, where it belongs.",
    ]
    wrapped = [textwrap.fill(n, 100) if n and not n.startswith("|") else n for n in notes]
    return "\n".join(lines + wrapped), counts_exact and agrees and below


def write_results(table: str) -> None:
    text = RESULTS.read_text(encoding="utf-8")
    today = time.strftime("%Y-%m-%d")
    intro = (
        f"`bench/bench_service.py`, run {today} on the 2-core machine shared with other "
        "engineers' jobs (load average below): `dhash serve` on 127.0.0.1 with PostgreSQL (fsync "
        "off), "
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
        timer: ClientHashTimer | None = None
        for workers in (1, 2):
            database = pg.create_database(f"bench{workers}")
            scratch = Path(tmp) / f"w{workers}"
            scratch.mkdir()
            timer = timer or ClientHashTimer(server_env(pg.url(database), scratch))
            instances.append(start(workers, pg.url(database), scratch))
        assert timer is not None
        try:
            for instance in instances:
                wait_ready(instance)
                run_phase(instance, 4, payloads(16))  # warm-up: imports, pools, first decodes
            timer.time(payloads(16))  # the same warm-up here: imports, resize weights
            for rep in range(REPETITIONS):
                if time.monotonic() - began > TOTAL_CAP_SECONDS:
                    break
                order = instances if rep % 2 == 0 else instances[::-1]
                for clients in LEVELS:
                    for instance in order:
                        bodies = payloads(REQUESTS[clients])
                        reference = clients == 1
                        if reference and rep % 2 == 1:
                            walls, budgets = timer.time(bodies)
                        phase = run_phase(instance, clients, bodies)
                        if reference and rep % 2 == 0:
                            walls, budgets = timer.time(bodies)
                        if reference:
                            phase.client_hash, phase.client_budget = walls, budgets
                        phases.append(phase)
                        mine = (
                            f"  client-side hash p50/p95 {quantile(0.5, walls) * 1000:4.1f}/"
                            f"{quantile(0.95, walls) * 1000:4.1f} ms"
                            if reference
                            else ""
                        )
                        print(
                            f"rep {rep} workers {phase.workers} clients {clients:>2}: "
                            f"{phase.throughput:6.1f} req/s  p95 {phase.latency(0.95) * 1000:6.0f} "
                            f"ms  hash p50/p95 "
                            f"{histogram_quantile(0.5, phase.hash_delta) * 1000:4.1f}/"
                            f"{phase.hash_p95 * 1000:4.1f} ms  "
                            f"({phase.ok} ok, {phase.errors} errors, "
                            f"{phase.hash_count:.0f} hashed){mine}",
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
