"""The post-deploy monitor: detection, false rollbacks, and the cost of one poll.

Everything runs against a real ``dhash serve`` on 127.0.0.1 under real traffic (the tests'
load generator), with the service's fault-injection settings making each release really bad:

1. per gate, a faulty release watched time-scaled (x120): the poll at which the gate failed and
   the seconds from the fault starting (the switch: the fault is on from the first request) to
   the verdict. The scaled schedule is the production schedule divided by the scale, so the
   same run read at production cadence is the same poll number at ``offset x scale`` seconds;
   that figure is printed beside it, and checked on a fake clock with the ledger's own values;
2. false rollbacks: >= 20 healthy time-scaled windows with the checkout's production gates;
3. the cost of one poll: scrape + evaluate (ms), beside the same queries answered by Debian's
   Prometheus scraping the same service (the anchor), medians and ratio.

The rollback itself is the controller's: ``--recovery`` (``bench/bench_recovery.py``) measures
the whole guarded deploy on a real site, from the fault starting to the old release healthy.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.integration.monitor_support import (  # noqa: E402
    TIME_SCALE,
    TOKEN,
    gates_file,
    service,
    watch,
)
from tests.support.load import LoadGenerator  # noqa: E402
from tests.support.prometheus_server import running_prometheus  # noqa: E402

from dhash_rollout.monitor.gates import GateState, recorded, step  # noqa: E402
from dhash_rollout.monitor.gates_config import GateName, load_gates_config  # noqa: E402
from dhash_rollout.monitor.ledger import read_rows  # noqa: E402
from dhash_rollout.monitor.sources import PrometheusSource, ScrapeSource  # noqa: E402
from dhash_rollout.runs.monitoring import Verdict  # noqa: E402

FAULTS = {
    "extractionFailureRate": {"extraction_failure_share": "0.5"},
    "p95HashTime": {"hash_latency_seconds": "0.4"},
    "healthFailures": {"health_failing": "true"},
    "lowConfidenceQueue": {"low_confidence": "true"},
}
HEALTHY_WINDOWS = 20
POLL_REPEATS = 60


def detection(tmp: Path) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for gate, fault in FAULTS.items():
        work = tmp / gate
        work.mkdir()
        with service(work, **fault) as served:
            result, _events, seconds = watch(served, work, gates_file(work))
        assert result.ledger_path is not None
        polls = [r for r in read_rows(result.ledger_path) if r["kind"] == "poll"]
        offset = float(polls[-1]["offset"]) if polls else float("nan")
        rows.append(
            {
                "gate": gate,
                "verdict": result.verdict.value,
                "failed_gate": result.failed_gate,
                "polls": result.polls,
                "scaled_s": round(seconds, 2),
                "offset_s": round(offset, 3),
                "production_s": round(offset * TIME_SCALE, 1),
                "fake_clock_polls": fake_clock_polls(result.ledger_path, work, gate),
            }
        )
    return rows


def fake_clock_polls(ledger: Path, work: Path, gate: str) -> int | None:
    """The ledger's recorded values folded again with production timestamps (x scale): the poll
    at which the same gate fails when the clock runs at production cadence."""
    config = load_gates_config(gates_file(work))
    g = config.environments["production"].gate(GateName(gate))
    state = GateState()
    rows = [r for r in read_rows(ledger) if r["kind"] == "poll"]
    start = next(r for r in read_rows(ledger) if r["kind"] == "start")["window_start"]
    for n, row in enumerate(rows, start=1):
        item = next(e for e in row["evaluations"] if e["gate"] == gate)
        window = (g.time_window or 60) * 60
        at = start + (float(item["at"]) - start) * TIME_SCALE
        state, ev = step(
            GateName(gate), g, state, recorded(item), at=at, counting_window_s=window, error_limit=4
        )
        if ev.status.value == "fail":
            return n
    return None


def false_rollbacks(tmp: Path) -> dict[str, object]:
    production = tmp / "production-gates.json"
    production.write_text((REPO / "quality-gates-config.json").read_text())
    verdicts: list[str] = []
    (tmp / "healthy").mkdir()
    with service(tmp / "healthy") as served:
        for n in range(HEALTHY_WINDOWS):
            work = tmp / f"window{n}"
            work.mkdir()
            result, _e, _s = watch(
                served, work, production, run_id=f"healthy-{n}", seed_base=(n + 1) * 10_000_000
            )
            verdicts.append(result.verdict.value)
    failed = sum(v == Verdict.FAILED.value for v in verdicts)
    return {
        "windows": len(verdicts),
        "false_rollbacks": failed,
        "verdicts": {v: verdicts.count(v) for v in set(verdicts)},
    }


def poll_cost(tmp: Path) -> dict[str, float]:
    (tmp / "cost").mkdir()
    with (
        service(tmp / "cost", extraction_failure_share="0.1") as served,
        running_prometheus(f"127.0.0.1:{served.port}", tmp / "cost") as prom,
    ):
        prom.wait_scrapes(2)
        start = time.time()
        with LoadGenerator(served.port, TOKEN, threads=3, max_seconds=4, ingest_every=1):
            time.sleep(4)
        time.sleep(0.5)
        scrape = ScrapeSource(served.url)
        theirs = PrometheusSource(prom.url)
        ours_ms, prom_ms = [], []
        for _ in range(POLL_REPEATS):  # interleaved, so both see the same machine load
            t = time.perf_counter()
            at = time.time()
            scrape.collect(at)
            scrape.failure_rate(start, at)
            scrape.hash_p95_ms(start, at)
            scrape.queue_length(at)
            ours_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            at = time.time()
            theirs.failure_rate(start, at)
            theirs.hash_p95_ms(start, at)
            theirs.queue_length(at)
            prom_ms.append((time.perf_counter() - t) * 1000)
        scrape.close()
        theirs.close()
    ours, anchor = statistics.median(ours_ms), statistics.median(prom_ms)
    return {
        "scrape_evaluate_ms": round(ours, 2),
        "prometheus_queries_ms": round(anchor, 2),
        "ratio_scrape_over_prometheus": round(ours / anchor, 2),
        "scrapes_kept": POLL_REPEATS,
    }


def main() -> None:
    if "--recovery" in sys.argv[1:]:
        recovery_main()
        return
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as raw:
        tmp = Path(raw)
        print("detection ...", file=sys.stderr)
        found = detection(tmp)
        print(json.dumps(found), file=sys.stderr)
        report = {
            "time_scale": TIME_SCALE,
            "detection": found,
            "healthy": false_rollbacks(tmp),
            "poll_cost": poll_cost(tmp),
        }
    report["seconds"] = round(time.monotonic() - began, 1)
    print(json.dumps(report, indent=2))
    print()
    print("| gate | verdict | fail poll | scaled s | production s | fake-clock poll |")
    print("|---|---|---:|---:|---:|---:|")
    for row in report["detection"]:  # type: ignore[attr-defined]
        print(
            f"| {row['gate']} | {row['verdict']} ({row['failed_gate']}) | {row['polls']} | "
            f"{row['scaled_s']} | {row['production_s']} | {row['fake_clock_polls']} |"
        )


def recovery_main() -> None:
    """``--recovery``: fault start to the old release healthy again, per gate (a real site)."""
    from bench.bench_recovery import SCALE, recovery

    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as raw:
        rows = recovery(Path(raw))
    print(json.dumps({"time_scale": SCALE, "recovery": rows,
                      "seconds": round(time.monotonic() - began, 1)}, indent=2))  # fmt: skip
    print()
    print("| gate | caught by | fail poll | detect s | healthy again s | rollback s | "
          "production: detect s / healthy s |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['gate']} | {r['caught_by']} | {r.get('fail_poll', '-')} | "
            f"{r.get('detect_s', '-')} | {r.get('healthy_again_s', '-')} | "
            f"{r.get('rollback_to_healthy_s', '-')} | {r.get('production_detect_s', '-')} / "
            f"{r.get('production_healthy_s', '-')} |"
        )


if __name__ == "__main__":
    main()
