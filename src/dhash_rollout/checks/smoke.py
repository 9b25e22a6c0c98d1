"""Post-deploy smoke tests: is the service up, hashing correctly, storing and matching?

Checks, in order (each one names what it saw):

1. **ready** — ``/ready`` is retried until it answers 200 or ``timeout`` (the overall deadline)
   runs out; nothing else runs against a service that never became ready.
2. **health** — ``/health`` answers ``ok`` and names a version.
3. **metrics** — ``/metrics`` parses as Prometheus text and exposes every metric family the
   monitor's quality gates read.
4. **known hash** — the known image (drawn at run time, :mod:`.known_image`) hashes to the
   committed ``KNOWN_DHASH64``: a hashing regression fails the deploy.
5. **ingest and match** — the known image is ingested into the reference library with
   ``source="smoke-test"`` and found again by ``/v1/search`` at distance 0. Ingest is idempotent
   by content SHA-256, so repeated runs store this one synthetic image once; it is easy to
   recognise (and to exclude) by its source.
6. **review queue** — the low-confidence queue can be read.
7. with ``post_rollback`` only, **rolled-back release** — the journal's latest rollback did not
   fail and the release it chose is the target's current one, with a serving process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from dhash_rollout.checks.known_image import KNOWN_DHASH64, KNOWN_IMAGE_NAME, known_image_png
from dhash_rollout.checks.report import CheckReport, CheckRun
from dhash_rollout.checks.service import service_client
from dhash_rollout.environments import Environment, api_token
from dhash_rollout.runs.health import probe_health, served_version
from dhash_rollout.runs.journal import Journal
from dhash_service import metrics
from dhash_service.client import DhashClient
from dhash_service.errors import CheckFailed, DhashError

SMOKE_SOURCE = "smoke-test"
REQUIRED_METRICS = (
    metrics.HASH_DURATION,
    metrics.EXTRACTIONS_TOTAL,
    metrics.LOW_CONFIDENCE_QUEUE_LENGTH,
    metrics.REQUESTS_TOTAL,
    metrics.BUILD_INFO,
)
CHECKS = ("health", "metrics", "known hash", "ingest and match", "review queue")
POST_ROLLBACK_CHECK = "rolled-back release"
REQUEST_TIMEOUT = 30.0
SEARCH_RETRY_SECONDS = 10.0  # other workers pick up library changes within their sync interval


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.remaining() <= 0


def wait_ready(client: DhashClient, deadline: Deadline) -> str:
    """Poll ``/ready`` (backing off to 2 s) until it answers 200; say how long it took."""
    started = time.monotonic()
    delay, attempts, last = 0.1, 0, ""
    while True:
        attempts += 1
        try:
            answer = client.ready()
            if answer.ready:
                waited = time.monotonic() - started
                return f"ready after {attempts} attempt(s), {waited:.1f} s"
            failing = {k: v for k, v in answer.checks.items() if v != "ok"}
            last = f"/ready answered {answer.status_code}: {failing or answer.checks}"
        except DhashError as exc:
            last = exc.message
        if deadline.remaining() <= delay:
            raise CheckFailed(f"not ready within the deadline ({attempts} attempts); last: {last}")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def metric_names(text: str) -> set[str]:
    """Every metric family name in an exposition, as written (``_total`` kept on counters)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "info":
            names.add(f"{family.name}_info")
        names.update(sample.name for sample in family.samples)
    return names


def build_version(text: str) -> str | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == metrics.BUILD_INFO and "version" in sample.labels:
                return sample.labels["version"]
    return None


def check_metrics(client: DhashClient) -> str:
    text = client.metrics_text()
    try:
        names = metric_names(text)
    except ValueError as exc:
        raise CheckFailed(f"/metrics is not valid Prometheus text: {exc}") from None
    missing = [m for m in REQUIRED_METRICS if m not in names]
    if missing:
        raise CheckFailed(f"/metrics lacks {', '.join(missing)}")
    return f"{len(REQUIRED_METRICS)} required families present, build {build_version(text)}"


def check_known_hash(client: DhashClient, image: bytes) -> str:
    report = client.hash(image, filename=KNOWN_IMAGE_NAME)
    if len(report.items) != 1:
        raise CheckFailed(f"expected 1 hashed image, got {len(report.items)}")
    item = report.items[0]
    if item.hash != KNOWN_DHASH64:
        raise CheckFailed(f"known image hashed to {item.hash}, expected {KNOWN_DHASH64}")
    return f"{item.hash} ({item.algorithm}) as expected"


def check_round_trip(client: DhashClient, image: bytes, deadline: Deadline) -> str:
    report = client.ingest(image, filename=KNOWN_IMAGE_NAME, library=True, source=SMOKE_SOURCE)
    if len(report.items) != 1:
        raise CheckFailed(f"ingest stored {len(report.items)} images, expected 1")
    image_id = report.items[0].image_id
    stop = time.monotonic() + min(SEARCH_RETRY_SECONDS, max(deadline.remaining(), 0.0))
    while True:
        matches = client.search(KNOWN_DHASH64, radius=0)
        found = next((m for m in matches if m.image_id == image_id), None)
        if found is not None:
            again = " (already stored)" if report.duplicate else ""
            return f"image {image_id}{again} found by search at distance {found.distance}"
        if time.monotonic() >= stop:
            raise CheckFailed(
                f"ingested image {image_id} not found by search at radius 0 "
                f"({len(matches)} other match(es))"
            )
        time.sleep(0.25)


def check_review_queue(client: DhashClient) -> str:
    items = client.review_items(status="pending", limit=100)
    more = "+" if len(items) == 100 else ""
    return f"readable, {len(items)}{more} pending item(s)"


def check_rolled_back_release(env: Environment) -> str:
    from dhash_rollout.targets import get_target

    journal = Journal.for_root(env.root)
    run = journal.last_run(kind="rollback")
    if run is None:
        raise CheckFailed(
            f"no rollback recorded in {journal.path} (--post-rollback verifies a rollback; "
            "after a deploy run the smoke tests without it)"
        )
    if run.outcome == "failed":
        raise CheckFailed(f"the latest rollback {run.deploy_id} failed")
    wanted = run.params.get("to_version")
    status = get_target(env).status()
    if wanted and status.current != wanted:
        latest = journal.last_run()
        since = (
            f" (deploy {latest.deploy_id} ran after it: without --post-rollback the smoke "
            "tests check what serves now)"
            if latest is not None and latest.kind == "deploy"
            else ""
        )
        raise CheckFailed(
            f"rollback {run.deploy_id} chose {wanted}, but {status.current} is current{since}"
        )
    serving = [p for p in status.serving if p.release == status.current]
    if not serving:
        raise CheckFailed(f"no process is serving the current release {status.current}")
    return f"{status.current} is current and serving ({run.deploy_id})"


def _health(env: Environment, timeout: float) -> str:
    answer = probe_health(
        env.url,
        token=api_token(env),
        require_ready=False,
        request_timeout=min(REQUEST_TIMEOUT, timeout),
    )
    return answer.summary()


def run_smoke(
    env: Environment,
    *,
    timeout: float = 600,
    post_rollback: bool = False,
    log_path: Path | None = None,
) -> CheckReport:
    deadline = Deadline(timeout)
    run = CheckRun(
        "smoke",
        meta={
            "env": env.name,
            "version": served_version(env),
            "url": env.url,
            "post_rollback": post_rollback,
            "timeout": timeout,
        },
    )
    names = [*CHECKS, *([POST_ROLLBACK_CHECK] if post_rollback else [])]
    image = known_image_png()
    with service_client(env, timeout=min(REQUEST_TIMEOUT, max(timeout, 1.0))) as client:
        checks: dict[str, Callable[[], str]] = {
            "health": lambda: _health(env, timeout),
            "metrics": lambda: check_metrics(client),
            "known hash": lambda: check_known_hash(client, image),
            "ingest and match": lambda: check_round_trip(client, image, deadline),
            "review queue": lambda: check_review_queue(client),
            POST_ROLLBACK_CHECK: lambda: check_rolled_back_release(env),
        }
        if not run.check("ready", lambda: wait_ready(client, deadline)).ok:
            for name in names:
                run.skip(name, f"{env.url} never became ready")
            return run.finish(log_path)
        for name in names:
            if deadline.passed:
                run.skip(name, f"the {timeout:g} s deadline passed")
            else:
                run.check(name, checks[name])
    return run.finish(log_path)


def smoke_phase(
    env: Environment,
    detail: dict[str, object],
    *,
    timeout: float,
    post_rollback: bool,
    log_path: Path,
) -> None:
    """The smoke tests as a deploy or rollback phase: what ran goes into the phase's journal
    ``detail``, and a failed check fails the phase."""
    report = run_smoke(env, timeout=timeout, post_rollback=post_rollback, log_path=log_path)
    detail.update(checks=len(report.results), log=str(report.log_path))
    if not report.ok:
        which = "post-rollback smoke tests" if post_rollback else "smoke tests"
        raise CheckFailed(f"{which} failed: {report.summary()}")
