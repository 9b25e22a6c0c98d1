"""The guide's pre-deployment checklist, item by item, against the real files.

Items (all in the working directory the guide's commands run from):

* the latest backup of the environment exists and verifies end to end;
* ``deploy-dryrun.log`` and ``migrate-dryrun.log`` are present and record a successful dry run;
* ``postdeploy-smoketests.log`` and ``test_logging.log`` are present and record passing runs;
* the ``premerge_artifacts/`` bundle is present and not empty (``monitor_logs/`` is optional,
  reported when present);
* ``approvals.json`` holds two approvers, one of them Ops/SRE, and the deploy operator's sign-off
  (see :mod:`dhash_rollout.checks.approvals`).

CI status on every platform and branch protection live in the code host, not on this machine;
they are the approvers' responsibility and are not re-checked here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dhash_rollout.backup import list_backups, verify_backup
from dhash_rollout.checks.approvals import check_approvals_file
from dhash_rollout.checks.daily import check_listeners
from dhash_rollout.checks.dryrun_logs import check_deploy_dryrun, check_migrate_dryrun
from dhash_rollout.checks.paths import backup_dir, shown
from dhash_rollout.checks.report import CheckReport, CheckRun, read_log_summary
from dhash_rollout.environments import Environment
from dhash_rollout.runs.schema import database_exists
from dhash_rollout.targets import get_target
from dhash_service.errors import CheckFailed

DEPLOY_DRYRUN_LOG = "deploy-dryrun.log"
MIGRATE_DRYRUN_LOG = "migrate-dryrun.log"
SMOKE_LOG = "postdeploy-smoketests.log"
LOGGING_LOG = "test_logging.log"
PREMERGE_DIR = "premerge_artifacts"
MONITOR_DIR = "monitor_logs"
APPROVALS = "approvals.json"
PORT_CHECK = "who listens on the port"  # refused whatever the preflight policy


def check_latest_backup(env: Environment, workdir: Path) -> str:
    """The newest backup must verify: an older good one does not make a broken newest safe."""
    directory = backup_dir(workdir)
    backups = list_backups(directory, env.name)
    if not backups:
        if not database_exists(env.database_url):
            # The first deploy creates the database: there is no data to lose, and no backup
            # can be made (the deploy's backup phase skips for the same reason).
            return f"no {env.name} database yet: nothing to back up before its first deploy"
        raise CheckFailed(
            f"no {env.name} backups in {shown(directory, workdir)}/ "
            f"(make one: ./scripts/backup_dhash.sh --env {env.name})"
        )
    info = verify_backup(backups[0].path)
    hours = info.age(datetime.now(UTC)).total_seconds() / 3600
    return f"{info.path.name} verified ({hours:.1f} h old, sha256 {info.sha256[:12]}…)"


def check_passed_run(
    path: Path,
    expected_run: str,
    *,
    env: str | None = None,
    versions: frozenset[str] = frozenset(),
    max_age: timedelta | None = None,
    now: datetime | None = None,
) -> str:
    """A passing run of ``expected_run``; with ``env``/``versions``/``max_age`` (a deploy asks),
    of this environment, testing one of these versions, and recent enough: a staging smoke log
    must not clear a production deploy (issue 12)."""
    logged = read_log_summary(path)
    if logged.run != expected_run:
        raise CheckFailed(f"{path.name} is a {logged.run!r} log, not {expected_run!r}")
    where = f"{logged.meta.get('env', '?')} at {logged.timestamp}"
    if not logged.ok:
        failed = ", ".join(map(str, logged.meta.get("failed", []))) or "unknown checks"
        raise CheckFailed(f"{path.name} records a failed run ({where}): {failed}")
    if env is not None and logged.meta.get("env") != env:
        raise CheckFailed(f"{path.name} is a run against {logged.meta.get('env')!r}, not {env!r}")
    tested = logged.meta.get("version")
    if versions and tested not in versions:
        wanted = " or ".join(sorted(versions))
        raise CheckFailed(f"{path.name} tested {tested or 'an unnamed version'}, not {wanted}")
    if max_age is not None:
        try:
            at = datetime.fromisoformat(logged.timestamp)
        except ValueError:
            raise CheckFailed(f"{path.name} has no readable timestamp") from None
        age = (now or datetime.now(UTC)) - at
        if age > max_age:
            hours = max_age.total_seconds() / 3600
            raise CheckFailed(
                f"{path.name} is {age.total_seconds() / 3600:.1f} h old (over {hours:g})"
            )
    return f"passed ({where}{f', {tested}' if tested else ''})"


def check_bundle(path: Path, *, optional: bool = False) -> str:
    if not path.is_dir():
        if optional:
            return f"{path.name}/ not present (optional)"
        raise CheckFailed(f"{path.name}/ is missing")
    count = sum(1 for p in path.rglob("*") if p.is_file())
    if count == 0 and not optional:
        raise CheckFailed(f"{path.name}/ is empty")
    return f"{path.name}/ present ({count} files)"


def _evidence_rules(env: Environment, version: str | None) -> dict[str, Any]:
    """What the smoke and logging logs must match when a deploy of ``version`` asks: this
    environment, the version being deployed or the one serving now, and recent enough."""
    if version is None:
        return {}
    current = get_target(env).current()
    versions = frozenset({version, *([current.version] if current else [])})
    return {
        "env": env.name,
        "versions": versions,
        "max_age": timedelta(seconds=env.settings.preflight_max_age_seconds),
    }


def run_preflight(
    env: Environment, *, workdir: Path, log_path: Path | None = None, version: str | None = None
) -> CheckReport:
    """``version``: the release a deploy is about to roll out; its dry run must plan that one."""
    run = CheckRun("preflight", meta={"env": env.name, "workdir": str(workdir)})
    evidence = _evidence_rules(env, version)
    run.check("latest backup verifies", lambda: check_latest_backup(env, workdir))
    run.check(
        "deploy dry-run log",
        lambda: check_deploy_dryrun(workdir / DEPLOY_DRYRUN_LOG, env, version),
    )
    run.check(
        "migrate dry-run log",
        lambda: check_migrate_dryrun(workdir / MIGRATE_DRYRUN_LOG, env, version),
    )
    run.check("smoke test log", lambda: check_passed_run(workdir / SMOKE_LOG, "smoke", **evidence))
    run.check(
        "logging validation log",
        lambda: check_passed_run(workdir / LOGGING_LOG, "validate-logging", **evidence),
    )
    run.check("CI artifacts", lambda: check_bundle(workdir / PREMERGE_DIR))
    run.check("monitor logs", lambda: check_bundle(workdir / MONITOR_DIR, optional=True))
    run.check("approvals", lambda: check_approvals_file(workdir / APPROVALS, env.name, version))
    # A foreign listener would take a share of the new release's traffic (the switch refuses
    # it whatever the policy; this names it before anything changes).
    run.check(PORT_CHECK, lambda: check_listeners(env, orphans_ok=True))
    return run.finish(log_path)
