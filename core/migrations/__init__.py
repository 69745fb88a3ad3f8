"""Alembic migrations of the history database, run by ``core.history.open_history`` at open."""
