"""Reading back the dry-run logs the guide's checklist asks for.

``deploy-dryrun.log`` is the deploy plan as ``dhash deploy --dry-run`` renders it
(:func:`dhash_rollout.runs.plan.render_plan`): a header line naming the environment, then the steps.
A file that does not start with that header for this environment is not a dry run of this
deploy. ``migrate-dryrun.log`` is :func:`dhash_rollout.migrate.write_dry_run_log`'s report:
``result: OK`` and ``database unchanged after rollback: yes`` mark a successful dry run.
"""

from __future__ import annotations

import re
from pathlib import Path

from dhash_rollout.environments import Environment
from dhash_rollout.migrate import display_url
from dhash_service.errors import CheckFailed
from dhash_service.logs import redact_text

_MIGRATE_HEADER = "# dhash migrate dry-run"
_PLAN_HEADER = re.compile(r"^deploy (?P<env>\S+) (?P<version>\S+): plan \(nothing is executed\)$")


def _lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckFailed(f"{path.name} is missing") from None
    except UnicodeDecodeError:
        raise CheckFailed(f"{path.name} is not text") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise CheckFailed(f"{path.name} is empty")
    return lines


def check_deploy_dryrun(path: Path, env: Environment, version: str | None = None) -> str:
    """A plan for this environment; when a deploy asks (``version``), a plan of that version."""
    lines = _lines(path)
    header = _PLAN_HEADER.match(lines[0])
    if header is None:
        raise CheckFailed(f"{path.name} does not start with a deploy plan header")
    if header["env"] != env.name:
        raise CheckFailed(f"{path.name} is a dry run for {header['env']!r}, not {env.name!r}")
    if version is not None and header["version"] != version:
        raise CheckFailed(
            f"{path.name} plans {header['version']}, not the {version} being deployed: run "
            f"./scripts/deploy_dhash.sh --dry-run --env {env.name} with this deploy's options"
        )
    steps = sum(1 for line in lines[1:] if re.match(r"^\s*\d+\. ", line))
    if steps == 0:
        raise CheckFailed(f"{path.name} has a header but no steps (interrupted?)")
    warnings = [line for line in lines if line.startswith("warning:")]
    note = f", {len(warnings)} warning(s)" if warnings else ""
    return f"plan for {header['version']} with {steps} steps{note}"


def check_migrate_dryrun(path: Path, env: Environment, version: str | None = None) -> str:
    """The migration dry run reported ``result: OK`` and left the database unchanged.

    It must be a dry run of this environment's database (compared in the log's display form,
    password hidden) when the log names one.
    """
    lines = _lines(path)
    if not lines[0].startswith(_MIGRATE_HEADER):
        raise CheckFailed(f"{path.name} does not start with a migrate dry-run header")
    if lines[0].startswith(f"{_MIGRATE_HEADER} (downgrade)"):
        # A rehearsed downgrade says nothing about the upgrade the deploy will run.
        raise CheckFailed(
            f"{path.name} rehearses a downgrade, not the deploy's upgrade: run "
            f"./scripts/migrate_dhash.sh --dry-run --env {env.name}"
        )
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    if "source" in fields:  # `migrate --dry-run --source`: a copy was migrated, not this database
        raise CheckFailed(
            f"{path.name} is a rehearsal on a copy of {fields['source']}, not a dry run of "
            f"{env.name}'s database: run ./scripts/migrate_dhash.sh --dry-run --env {env.name}"
        )
    database = fields.get("database")
    if database and database != redact_text(display_url(env.database_url)):
        raise CheckFailed(f"{path.name} is a dry run of {database}, not {env.name}'s database")
    rehearsed = fields.get("version")
    if version is not None and rehearsed != version:
        raise CheckFailed(
            f"{path.name} rehearses the migrations of {rehearsed or 'an unnamed version'}, not "
            f"of the {version} being deployed: install it (dhash release install --env "
            f"{env.name} --source ...) and run its own `dhash migrate --dry-run --env {env.name}`"
        )
    result = fields.get("result", "missing")
    if result != "OK":
        raise CheckFailed(f"{path.name} records result: {result}")
    if fields.get("database unchanged after rollback") != "yes":
        raise CheckFailed(f"{path.name} does not record the database as unchanged")
    return f"OK, {fields.get('current revision', '?')} -> {fields.get('target', '?')}"
