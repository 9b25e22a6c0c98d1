"""Persistence: SQLAlchemy models, the repository the service talks to, and schema migrations."""
