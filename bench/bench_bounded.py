"""What bounding costs the ordinary path: server CPU per ingest against ``digest`` alone, and
decoder isolation against in-process decoding of ordinary PDFs and videos.

Run with ``make bench-bounded``.

1. **Ingest CPU.** A real ``dhash serve --workers 1`` on a throw-away PostgreSQL (loopback, fsync
   off) receives 1920x1080 photo-like JPEGs on ``POST /v1/images`` from one client, each with
   unique bytes (a JPEG comment), so every one is extracted, hashed, matched and stored. The
   server's cost is read from the worker's own CPU clock (utime + stime in ``/proc/<pid>/stat``)
   around each round, so the client sharing the cores does not count. The anchor is the CPU
   (``time.process_time``) of ``digest`` alone in this process on exactly the same payloads.
   Rounds alternate server and anchor; the figure is the median over rounds of each round's mean.
   Each round also sends the same payloads to ``POST /v1/hash`` (extraction and hash, no store)
   and 120 ``GET /health`` (the fixed price of the HTTP stack and the access log), so the cost
   splits into HTTP, store and hash.
2. **Isolation.** An ordinary 3-page PDF with photos and a 10 s video are digested in process and
   through a ``DecoderPool`` child (the path the service takes), alternating, wall time per call
   (the work happens in another process, so its CPU is not this one's); medians and ratios.

Prints the tables; figures are recorded by hand in bench/RESULTS.md. Bounded: fixed counts.
``BENCH_INGEST_ONLY=1`` skips part 2; ``BENCH_ROUNDS`` (default 5) sets the rounds of part 1.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_service import TOKEN, serve_one_worker, server_env, unique  # noqa: E402
from tests.support.api import photo  # noqa: E402
from tests.support.corpus import pdf_with_images, photo_jpeg, video  # noqa: E402
from tests.support.postgres import running_postgres  # noqa: E402

from dhash_service.digest import digest  # noqa: E402
from dhash_service.extraction import Limits  # noqa: E402
from dhash_service.extraction.limits import RequestBudget  # noqa: E402
from dhash_service.sandbox.pool import ChildLimits, DecoderPool  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
PER_ROUND = 24
ISOLATION_CALLS = 15
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, all its threads, from ``/proc/<pid>/stat`` (clock ticks:
    10 ms steps, so only sums over many requests are precise)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_seconds_ns(pid: int) -> float:
    """The CPU time of a process's live threads in nanosecond steps (each thread's
    ``schedstat``): the per-round figure. A thread that ends within a round would be missed,
    so the bench also prints the tick-based total over all rounds to check it against."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as stat:
                total += int(stat.read().split()[0])
        except FileNotFoundError:  # the thread ended between listdir and open
            continue
    return total / 1e9


def loop_seconds_ns(pid: int) -> float:
    """The CPU time of the worker's main thread, where uvicorn runs the event loop (HTTP
    parsing, middleware, the route up to the thread hand-off, the answer)."""
    with open(f"/proc/{pid}/task/{pid}/schedstat") as stat:
        return int(stat.read().split()[0]) / 1e9


def start_server(
    name: str, database_url: str, scratch: Path, source: Path | None
) -> tuple[subprocess.Popen[bytes], str]:
    """``dhash serve --workers 1``; from ``source`` (another checkout's ``src``) when given."""
    env = server_env(database_url, scratch)
    env["DHASH_INDEX_SYNC_SECONDS"] = "5"
    if source is not None:
        env["PYTHONPATH"] = str(source)  # ahead of the editable install's path entry
    return serve_one_worker(env, scratch / f"serve-{name}.log")


# What each round sends, per server: the ingest, the same payloads hashed only (no store), and
# the probe (the fixed price of the HTTP stack and the access log).
ROUTES = ("POST /v1/images", "POST /v1/hash", "GET /health")
HEALTH_PER_ROUND = 120


def route_cpu(
    client: httpx.Client, pid: int, route: str, payloads: list[bytes]
) -> tuple[float, float, int, float]:
    """The worker's CPU seconds per request of ``route`` over one round (thread clocks), the
    round's CPU seconds in clock ticks, the requests sent, and the event loop's share per
    request."""
    time.sleep(0.3)  # let the background index poll settle
    before, before_ticks = cpu_seconds_ns(pid), cpu_seconds(pid)
    before_loop = loop_seconds_ns(pid)
    if route == "GET /health":
        for _ in range(HEALTH_PER_ROUND):
            assert client.get("/health").status_code == 200
        sent = HEALTH_PER_ROUND
    else:
        path = route.split()[1]
        for data in payloads:
            response = client.post(path, content=data)
            assert response.status_code == (201 if path == "/v1/images" else 200), response.text
        sent = len(payloads)
    return (
        (cpu_seconds_ns(pid) - before) / sent,
        cpu_seconds(pid) - before_ticks,
        sent,
        (loop_seconds_ns(pid) - before_loop) / sent,
    )


def ingest_cpu(
    sources: dict[str, Path | None],
) -> tuple[dict[tuple[str, str], tuple[float, float, float]], float]:
    """Per source tree and route: the median over rounds of the server CPU per request, the
    tick-based mean over all rounds and the median event-loop CPU per request; and the median
    digest CPU per payload. Rounds alternate the servers and the anchor."""
    base = [photo_jpeg(1920, 1080, seed) for seed in range(4)]
    server_means: dict[tuple[str, str], list[float]] = {
        (name, route): [] for name in sources for route in ROUTES
    }
    ticks: dict[tuple[str, str], list[tuple[float, int]]] = {key: [] for key in server_means}
    loop_means: dict[tuple[str, str], list[float]] = {key: [] for key in server_means}
    anchor_means: list[float] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with running_postgres() as postgres, tempfile.TemporaryDirectory() as scratch:
        servers = {}
        try:
            for name, source in sources.items():
                database = postgres.url(postgres.create_database(f"bench_{name}"))
                servers[name] = start_server(name, database, Path(scratch), source)
            for _, url in servers.values():
                with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                    for n in range(4):  # warm: lazy imports, first connection, caches
                        client.post("/v1/images", content=unique(base[n % 4], 10_000 + n))
                        client.post("/v1/hash", content=unique(base[n % 4], 20_000 + n))
                        client.get("/health")
            for round_ in range(ROUNDS):
                payloads = [unique(base[i % 4], round_ * 1000 + i) for i in range(PER_ROUND)]
                order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
                for name in order:
                    _, url = servers[name]
                    pid = int(httpx.get(f"{url}/health").json()["pid"])
                    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                        for route in ROUTES:
                            mean, tick_seconds, sent, loop = route_cpu(client, pid, route, payloads)
                            server_means[name, route].append(mean)
                            loop_means[name, route].append(loop)
                            ticks[name, route].append((tick_seconds, sent))
                started = time.process_time()
                for data in payloads:
                    digest(data, limits=Limits())
                anchor_means.append((time.process_time() - started) / PER_ROUND)
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(30)
    figures = {
        key: (
            statistics.median(values),
            sum(t for t, _ in ticks[key]) / sum(n for _, n in ticks[key]),
            statistics.median(loop_means[key]),
        )
        for key, values in server_means.items()
    }
    return figures, statistics.median(anchor_means)


def alternate(
    calls: int, first: Callable[[], object], second: Callable[[], object]
) -> tuple[float, float]:
    """Median wall seconds of each, called alternately (which goes first alternates too)."""
    times: tuple[list[float], list[float]] = ([], [])
    for n in range(calls):
        order = (0, 1) if n % 2 == 0 else (1, 0)
        for which in order:
            started = time.perf_counter()
            (first, second)[which]()
            times[which].append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def isolation_cost() -> list[tuple[str, float, float]]:
    documents = {
        "PDF, 3 pages with photos": pdf_with_images([photo(1), photo(2), photo(3)], pages=3),
        "video, 10 s 640x360": video(seconds=10.0, fps=10, size=(640, 360), gop=10),
    }
    limits = Limits()
    pool = DecoderPool(1, ChildLimits(2 * 1024**3, 30.0), queue_seconds=10.0)
    rows = []
    try:
        time.sleep(2.0)  # the pre-started child is ready
        for name, data in documents.items():

            def isolated(data: bytes = data) -> object:
                request = RequestBudget(20.0)
                return pool.digest(
                    data, filename=None, algorithm="dhash64", limits=limits, request=request
                )

            def in_process(data: bytes = data) -> object:
                return digest(data, limits=limits)

            isolated()  # warm the child for this kind
            in_process()
            inside, child = alternate(ISOLATION_CALLS, in_process, isolated)
            rows.append((name, inside, child))
    finally:
        pool.close()
    return rows


def main() -> None:
    """``BENCH_BEFORE_SRC=<a checkout's src>`` also measures that code's server (before/after)."""
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    sources: dict[str, Path | None] = {"after": None}
    if os.environ.get("BENCH_BEFORE_SRC"):
        sources = {"before": Path(os.environ["BENCH_BEFORE_SRC"]), **sources}
    servers, anchor = ingest_cpu(sources)
    print(f"rounds: {ROUNDS} of {PER_ROUND}")
    print(
        "\n| 1920x1080 JPEG | CPU ms per request | vs digest | tick-based mean ms "
        "| of it event loop ms |"
    )
    print("|---|---:|---:|---:|---:|")
    print(f"| `digest` alone (anchor) | {anchor * 1000:.2f} | 1.00 | | |")
    for (name, route), (server, by_ticks, loop) in servers.items():
        print(
            f"| worker ({name}), {route} | {server * 1000:.2f} | {server / anchor:.2f} "
            f"| {by_ticks * 1000:.2f} | {loop * 1000:.2f} |"
        )
    if os.environ.get("BENCH_INGEST_ONLY"):
        return
    rows = isolation_cost()
    print("\n| ordinary document | in process ms | decoder child ms | ratio |")
    print("|---|---:|---:|---:|")
    for name, inside, child in rows:
        print(f"| {name} | {inside * 1000:.1f} | {child * 1000:.1f} | {child / inside:.2f} |")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
