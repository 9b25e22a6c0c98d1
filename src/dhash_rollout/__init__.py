"""Guarded rollout toolkit: backup, migrate, deploy, monitor and roll back the dhash service."""
