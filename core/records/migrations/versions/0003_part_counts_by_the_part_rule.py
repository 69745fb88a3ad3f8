"""First-pass yield by the part rule: ``part_counts`` recounted, with its triggered parts.

Revision 0002 counted every trigger or verdict-change frame as a part, so in continuous mode a
change back to PASS counted as a good part. The per-station part counts are recounted here from
the events with ``core.records.history.parts_of_events`` (the part rule the writer and the reports
follow, not a copy of it), and gain ``triggered``: the parts whose good ones are counted, which
first-pass yield divides by. An upgraded station keeps its history and gets the right figures.

Downgrade drops ``triggered`` and keeps the recounted parts (the older app reads them as its own).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

from core.records.history import parts_of_events

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

EVENTS = sa.table("verdict_events", *[sa.column(c) for c in ("station", "camera", "time", "quarter",
                                                              "cause", "verdict")])
PART_COUNTS = sa.table("part_counts", *[sa.column(c) for c in ("station", "quarter", "parts",
                                                                "failed", "triggered")])


def upgrade() -> None:
    op.add_column("part_counts", sa.Column("triggered", sa.BigInteger(), nullable=False,
                                           server_default="0"))
    op.execute(PART_COUNTS.delete())
    op.execute(PART_COUNTS.insert().from_select(
        ["station", "quarter", "parts", "failed", "triggered"],
        parts_of_events(EVENTS, per_quarter=True)))


def downgrade() -> None:
    op.drop_column("part_counts", "triggered")
