"""The rollout engine that deploy and rollback both sit on (journal, locks, plan, run context)."""
