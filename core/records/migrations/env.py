"""Alembic environment: migrations always run on the connection ``core.records.history`` hands over.

The caller holds that connection inside one transaction (and a lock: ``BEGIN IMMEDIATE`` on
SQLite, an advisory lock on PostgreSQL), so two stations opening one database at once never
race, and a failed upgrade leaves the database at its previous revision.
"""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
