"""Alembic revisions, oldest first: ``0001`` the event and change tables, ``0002`` report rollups,
``0003`` part counts by the part rule, ``0004`` ERROR verdicts, ``0005`` users, ``0006`` what
reading tools read."""
