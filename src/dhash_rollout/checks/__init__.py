"""Post-deploy and operational checks: smoke, logging validation, preflight, daily, maintenance.

Each ``run_*`` function takes an :class:`~dhash_rollout.environments.Environment`, runs its
checks against the real service and files, and returns a :class:`CheckReport`; it never raises
for a failed check (callers decide: the CLI exits 1, the deploy pipeline stops or rolls back).
See ``docs/runbooks.md`` for what each one checks.
"""

from dhash_rollout.checks.daily import run_daily, run_weekly
from dhash_rollout.checks.logging_check import run_logging_validation
from dhash_rollout.checks.maintenance import run_maintenance
from dhash_rollout.checks.preflight import run_preflight
from dhash_rollout.checks.report import CheckReport, CheckResult
from dhash_rollout.checks.smoke import run_smoke

__all__ = [
    "CheckReport",
    "CheckResult",
    "run_daily",
    "run_logging_validation",
    "run_maintenance",
    "run_preflight",
    "run_smoke",
    "run_weekly",
]
