"""Post-deploy and operational checks: smoke, logging validation, preflight, daily, maintenance.

Each ``run_*`` function takes an :class:`~dhash_rollout.environments.Environment`, runs its
checks against the real service and files, and returns a :class:`CheckReport`; it never raises
for a failed check (callers decide: the CLI exits 1, the deploy pipeline rolls back).
"""

from dhash_rollout.checks.report import CheckReport, CheckResult

__all__ = ["CheckReport", "CheckResult"]
