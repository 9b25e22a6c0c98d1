"""``validate-logging``: drive concurrent traffic at the service, then check the lines it logged.

The validator notes the end of every log file in the environment's service log directory, sends
``concurrency`` requests at a time (successes, a 404 and a request with a wrong token, each with
its own ``X-Request-ID``), waits for the lines to land, and validates *every* line appended
meanwhile with :mod:`dhash_rollout.checks.log_lines`. The secrets it looks for are the ones this
machine knows: the environment's API token, the service's configured tokens, the notification
webhooks and SMTP password, and the wrong token it sent itself (rejected credentials must not be
logged either).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from dhash_rollout.checks.known_image import KNOWN_IMAGE_NAME, known_image_png
from dhash_rollout.checks.log_lines import LogValidation, validate_lines
from dhash_rollout.checks.report import CheckReport, CheckRun
from dhash_rollout.checks.service import is_service_log, service_log_dir
from dhash_rollout.environments import Environment, api_token
from dhash_rollout.runs.health import served_version
from dhash_service.config import NotificationSettings, Settings
from dhash_service.errors import CheckFailed

REQUESTS_PER_WORKER = 4
LINE_WAIT_SECONDS = 10.0
QUIET_SECONDS = 2.0
_MAX_SHOWN_PROBLEMS = 5


@dataclass(frozen=True)
class Probe:
    request_id: str
    method: str
    path: str
    expect: int
    auth: str | None  # bearer token, or None for no Authorization header
    upload: bool = False


@dataclass(frozen=True)
class ProbeResult:
    probe: Probe
    status: int | None
    error: str | None


def plan_probes(total: int, run_id: str, token: str | None, wrong_token: str) -> list[Probe]:
    """A repeating mix of the routes a deploy exercises, plus a 404 and a 401 when auth is on."""
    mix = [
        Probe("", "GET", "/health", 200, None),
        Probe("", "GET", "/ready", 200, None),
        Probe("", "GET", "/metrics", 200, None),
        Probe("", "POST", "/v1/hash", 200, token, upload=True),  # needs the read scope
        Probe("", "GET", "/v1/review?limit=1", 200, token),
        Probe("", "GET", "/validate-logging-no-such-route", 404, None),
    ]
    if token:
        mix.append(Probe("", "GET", "/v1/review?limit=1", 401, wrong_token))
    return [
        replace(mix[i % len(mix)], request_id=f"vl-{run_id}-{i:03d}")
        for i in range(max(total, len(mix)))
    ]


def _send(client: httpx.Client, probe: Probe, image: bytes) -> ProbeResult:
    headers = {"X-Request-ID": probe.request_id}
    if probe.auth:
        headers["Authorization"] = f"Bearer {probe.auth}"
    files = {"file": (KNOWN_IMAGE_NAME, image, "image/png")} if probe.upload else None
    try:
        response = client.request(probe.method, probe.path, headers=headers, files=files)
    except httpx.HTTPError as exc:
        return ProbeResult(probe, None, f"{type(exc).__name__}: {exc}")
    return ProbeResult(probe, response.status_code, None)


def send_probes(env: Environment, probes: list[Probe], concurrency: int) -> list[ProbeResult]:
    image = known_image_png()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with (
        httpx.Client(base_url=env.url, timeout=30.0, limits=limits) as client,
        ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="validate-logging") as pool,
    ):
        return list(pool.map(lambda p: _send(client, p, image), probes))


class LogTail:
    """Remembers where each log file ended, to read exactly what was appended afterwards."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.offsets = {p: p.stat().st_size for p in self._files()}

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(p for p in self.directory.iterdir() if p.is_file() and is_service_log(p))

    def new_lines(self) -> list[str]:
        lines: list[str] = []
        for path in self._files():
            start = self.offsets.get(path, 0)
            with path.open("rb") as fh:
                if fh.seek(0, 2) < start:  # truncated or replaced: read it all
                    start = 0
                fh.seek(start)
                data = fh.read()
            # Only whole lines: a line still being written is read on the next pass.
            complete = data[: data.rfind(b"\n") + 1]
            lines.extend(complete.decode("utf-8", errors="replace").splitlines())
        return lines


def known_secrets(env: Environment, extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    notify = NotificationSettings()
    values = [api_token(env), *Settings().api_tokens, *extra]
    for secret in (
        notify.slack_webhook_url,
        notify.teams_webhook_url,
        notify.discord_webhook_url,
        notify.smtp_password,
    ):
        if secret is not None:
            values.append(secret.get_secret_value())
    return tuple(sorted({v for v in values if v and len(v) >= 6}))


def _wait_for_lines(
    tail: LogTail, request_ids: set[str], check: Callable[[list[str]], LogValidation]
) -> tuple[list[str], LogValidation]:
    """Read until every request id is seen, the log stays quiet for a while, or time is up.

    The service writes its access line as each response completes, so lines still missing
    after a quiet spell are not coming.
    """
    deadline = time.monotonic() + LINE_WAIT_SECONDS
    quiet_since, seen = time.monotonic(), -1
    while True:
        lines = tail.new_lines()
        result = check(lines)
        now = time.monotonic()
        if len(lines) != seen:
            quiet_since, seen = now, len(lines)
        if not result.missing(request_ids) or now > deadline or now - quiet_since > QUIET_SECONDS:
            return lines, result
        time.sleep(0.2)


def run_logging_validation(
    env: Environment, *, concurrency: int = 5, log_path: Path | None = None
) -> CheckReport:
    run_id = uuid.uuid4().hex[:8]
    wrong_token = f"wrong-{secrets.token_urlsafe(18)}"
    log_dir = service_log_dir(env)
    run = CheckRun(
        "validate-logging",
        meta={
            "env": env.name,
            "version": served_version(env),
            "url": env.url,
            "concurrency": concurrency,
            "log_dir": str(log_dir),
        },
    )
    if not log_dir.is_dir():
        run.record(
            "service log directory",
            False,
            f"{log_dir} does not exist: was {env.name} deployed? "
            f"(dhash release status --env {env.name}; set service_log_dir if its logs live "
            "elsewhere)",
        )
        return run.finish(log_path)
    tail = LogTail(log_dir)
    probes = plan_probes(concurrency * REQUESTS_PER_WORKER, run_id, api_token(env), wrong_token)
    started = time.perf_counter()
    results = send_probes(env, probes, concurrency)
    run.record(*_judge_responses(results), seconds=time.perf_counter() - started)
    ids = {p.request_id for p in probes}
    secrets_known = known_secrets(env, (wrong_token,))
    started = time.perf_counter()
    lines, validation = _wait_for_lines(tail, ids, lambda ls: validate_lines(ls, secrets_known))
    seconds = time.perf_counter() - started
    run.check("lines are JSON with levels", lambda: _judge_lines(validation, lines, seconds))
    run.check("request ids", lambda: _judge_ids(validation, ids))
    return run.finish(log_path)


def _judge_responses(results: list[ProbeResult]) -> tuple[str, bool, str]:
    failed = [
        f"{r.probe.method} {r.probe.path} -> {r.status or r.error} (expected {r.probe.expect})"
        for r in results
        if r.status != r.probe.expect
    ]
    if failed:
        return (
            "concurrent requests",
            False,
            f"{len(failed)}/{len(results)} unexpected: " + "; ".join(failed[:3]),
        )
    return "concurrent requests", True, f"{len(results)} requests answered as expected"


def _judge_lines(validation: LogValidation, lines: list[str], seconds: float) -> str:
    if not lines:
        raise CheckFailed("the service logged nothing for the requests")
    if validation.problems:
        shown = "; ".join(str(p) for p in validation.problems[:_MAX_SHOWN_PROBLEMS])
        more = len(validation.problems) - _MAX_SHOWN_PROBLEMS
        raise CheckFailed(
            f"{len(validation.problems)} problem(s) in {validation.lines_checked} lines: {shown}"
            + (f" (and {more} more)" if more > 0 else "")
        )
    levels = ", ".join(f"{k}={v}" for k, v in sorted(validation.levels.items()))
    return f"{validation.lines_checked} lines valid, no secrets ({levels}; {seconds:.1f} s)"


def _judge_ids(validation: LogValidation, ids: set[str]) -> str:
    missing = validation.missing(ids)
    if missing:
        raise CheckFailed(
            f"{len(missing)}/{len(ids)} requests not found in the log by X-Request-ID "
            f"(e.g. {missing[0]})"
        )
    return f"all {len(ids)} requests logged with their request id"
