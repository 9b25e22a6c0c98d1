"""Rollback: the decision (pure, over gathered facts) and the executor, runnable on its own
under the environment's lock or inside a deploy that holds it (``execute``)."""

from dhash_rollout.rollback.run import RollbackRequest, RollbackResult, execute, rollback

__all__ = ["RollbackRequest", "RollbackResult", "execute", "rollback"]
