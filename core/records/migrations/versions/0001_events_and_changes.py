"""Verdict events and tool changes.

Revision ID: 0001
Revises:
Create Date: 2025-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite: the rowid


def upgrade() -> None:
    op.create_table(
        "verdict_events",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Double(), nullable=False),  # seconds since the epoch (UTC)
        sa.Column("station", sa.String(), nullable=False),
        sa.Column("camera", sa.String(), nullable=False),
        sa.Column("tool", sa.String(), nullable=False),
        sa.Column("version", sa.String(), nullable=False),
        sa.Column("verdict", sa.String(), nullable=False),
        sa.Column("defect_class", sa.String()),
        sa.Column("raw_score", sa.Double()),
        sa.Column("score", sa.Double(), nullable=False),
        sa.Column("threshold", sa.Double(), nullable=False),
        sa.Column("latency_ms", sa.Double()),
        sa.Column("cause", sa.String(), nullable=False),
        sa.Column("trigger_id", sa.String()),
    )
    op.create_index("ix_verdict_events_time", "verdict_events", ["time"])
    op.create_table(
        "tool_changes",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Double(), nullable=False),
        sa.Column("station", sa.String(), nullable=False),
        sa.Column("tool", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),  # JSON
        sa.Column("actor", sa.String(), nullable=False),
    )
    op.create_index("ix_tool_changes_time", "tool_changes", ["time"])


def downgrade() -> None:
    op.drop_table("tool_changes")
    op.drop_table("verdict_events")
