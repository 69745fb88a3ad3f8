"""Alembic revisions, oldest first: ``0001`` the event and change tables, ``0002`` report rollups,
``0003`` part counts by the part rule."""
