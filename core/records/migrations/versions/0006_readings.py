"""Readings: what a code or label text tool read, with each of its verdict events.

A reading tool's verdict is about a text (the code's, the label's), so the event keeps the text
as read, what it was read as (a symbology, or "text"), the reader's confidence and the print
quality grade where the reader gives them. Every column is nullable: the events of the other
kinds, and every event written before this revision, have no reading. On SQLite the columns are
added in place (``ALTER TABLE ADD COLUMN``): no copy of a large table.

Downgrade drops the columns (the older app has no reading tools).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

COLUMNS = (("reading_text", sa.Text()), ("reading_format", sa.String()),
           ("reading_confidence", sa.Double()), ("reading_grade", sa.String()))


def upgrade() -> None:
    with op.batch_alter_table("verdict_events") as batch:  # adding columns needs no table copy
        for name, kind in COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("verdict_events") as batch:  # SQLite: a copy of the table
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
