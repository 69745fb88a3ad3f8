"""Alembic migrations of the history database, run by ``core.records.history.open_history`` at open."""
