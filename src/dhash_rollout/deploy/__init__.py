"""The guarded deploy: plan (pure) and the executor that runs it under the environment's lock."""

from dhash_rollout.deploy.run import DeployRequest, DeployResult, deploy, dry_run

__all__ = ["DeployRequest", "DeployResult", "deploy", "dry_run"]
