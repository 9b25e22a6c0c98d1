"""Each release's own ``/metrics``, read separately while both serve on one port.

Canary and stable listen on the same port (one SO_REUSEPORT group), so a scrape of the port
reaches whichever process the steering program picks. A reading therefore asks ``/health``
(which names the process's pid and version) and then ``/metrics`` on the *same* kept-alive
connection, so the metrics are known to be that process's, and repeats on fresh connections
until each release has answered (bounded: at a 5 % weight about one connection in twenty
reaches the canary). ``dhash serve`` runs prometheus_client's multiprocess mode, so one answer
holds every worker of that release.

The judge takes increments: :func:`increments` subtracts two snapshots of one release, and a
counter that went back (the release restarted) counts from zero again, as PromQL's
``increase`` does.
"""

from __future__ import annotations

import http.client
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from prometheus_client.parser import text_string_to_metric_families

from dhash_rollout.canary.judge import ReleasePoll
from dhash_rollout.canary.quantiles import Histogram
from dhash_service.metrics import EXTRACTIONS_TOTAL, HASH_DURATION_SECONDS

EXTRACTIONS = EXTRACTIONS_TOTAL.removesuffix("_total")


@dataclass(frozen=True)
class Snapshot:
    """One release's cumulative counters at one reading."""

    pid: int
    version: str
    extractions: float
    failures: float
    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count), +Inf last


def parse(text: str, pid: int, version: str) -> Snapshot:
    """The counters the judge needs from an exposition text (the service's metric names)."""
    extractions = failures = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == EXTRACTIONS:
            for s in family.samples:
                if s.name == EXTRACTIONS_TOTAL:
                    extractions += s.value
                    if s.labels.get("result") == "failed":
                        failures += s.value
        elif family.name == HASH_DURATION_SECONDS:
            for s in family.samples:
                if s.name == f"{HASH_DURATION_SECONDS}_bucket":
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
    return Snapshot(pid, version, extractions, failures, tuple(sorted(buckets.items())))


def _grown(now: float, before: float) -> int:
    return round(now - before) if now >= before else round(now)


def increments(before: Snapshot | None, now: Snapshot, healthy: bool | None) -> ReleasePoll:
    """What one release did between two readings (from zero after a restart)."""
    restarted = before is None or before.pid != now.pid or now.extractions < before.extractions
    base = None if restarted else before
    bounds = tuple(le for le, _ in now.buckets if not math.isinf(le))
    prev = dict(base.buckets) if base else {}
    cumulative = [_grown(c, prev.get(le, 0.0)) for le, c in now.buckets]
    per_bucket = [cumulative[0]] + [max(0, b - a) for a, b in pairwise(cumulative)]
    extractions = _grown(now.extractions, base.extractions if base else 0.0)
    failures = min(extractions, _grown(now.failures, base.failures if base else 0.0))
    return ReleasePoll(extractions, failures, Histogram(bounds, tuple(per_bucket)), healthy)


def read_one(port: int, timeout: float = 2.0) -> Snapshot | None:
    """``/health`` then ``/metrics`` on one kept-alive connection; None if it changed hands."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/health")
        first = conn.getresponse()
        body = first.read()
        sock = conn.sock
        if first.status != 200 or first.will_close or sock is None:
            return None
        health = json.loads(body)
        pid, version = health.get("pid"), health.get("version")
        if not isinstance(pid, int) or not isinstance(version, str):
            return None
        conn.request("GET", "/metrics")
        second = conn.getresponse()
        text = second.read().decode("utf-8", "replace")
        if conn.sock is not sock or second.status != 200:
            return None
        return parse(text, pid, version)
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()


def read_releases(
    port: int, classify: Callable[[int], str | None], *, tries: int = 400, budget_s: float = 5.0
) -> dict[str, Snapshot]:
    """A snapshot of each release (``classify`` names the release a pid belongs to:
    ``"canary"``, ``"stable"`` or None), within ``tries`` connections and ``budget_s``; a
    release missing from the result did not answer (the judge counts that as not healthy)."""
    found: dict[str, Snapshot] = {}
    deadline = time.monotonic() + budget_s
    for _ in range(tries):
        if time.monotonic() > deadline:
            break
        snap = read_one(port)
        if snap is not None:
            name = classify(snap.pid)
            if name is not None and name not in found:
                found[name] = snap
        if {"canary", "stable"} <= found.keys():
            break
    return found
