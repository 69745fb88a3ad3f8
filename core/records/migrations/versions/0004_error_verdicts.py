"""ERROR verdicts: an event may have no score, and says why the tool could not judge.

A tool whose model gives no finite score, or cannot run, records an ERROR event (never a PASS).
Before this revision the NOT NULL ``score`` column refused such an event, and with it every
event queued behind it. ``error`` holds the one-line reason.

Downgrade deletes the ERROR events (the older app knows only PASS and FAIL) and restores NOT NULL.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("verdict_events") as batch:  # SQLite: a copy of the table
        batch.alter_column("score", existing_type=sa.Double(), nullable=True)
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM verdict_events WHERE score IS NULL")
    with op.batch_alter_table("verdict_events") as batch:
        batch.drop_column("error")
        batch.alter_column("score", existing_type=sa.Double(), nullable=False)
