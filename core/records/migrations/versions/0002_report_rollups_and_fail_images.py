"""Report rollups (counts per 15 minutes, score bins per day, parts per 15 minutes) and FAIL images.

Reports read these small tables instead of grouping millions of events (a year of one busy
station: 5 million rows, 5-15 s per GROUP BY on SQLite). Existing events get their bucket columns
and are counted into the rollups here, so an upgraded station's reports include its old history.

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-24
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SCORE_BINS = 20
PART_CAUSES = "('trigger', 'change')"
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _count_table(name: str, *keys: sa.Column, counts: tuple[str, ...] = ("n",)) -> None:
    op.create_table(name, *keys, *[sa.Column(c, sa.BigInteger(), nullable=False) for c in counts],
                    sa.PrimaryKeyConstraint(*[k.name for k in keys]))


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.add_column("verdict_events", sa.Column("quarter", sa.Integer()))  # floor(time / 900)
    op.add_column("verdict_events", sa.Column("score_bin", sa.Integer()))  # floor(score * 20), 0..19
    if sqlite:  # time is positive: CAST truncates, i.e. floors
        op.execute("UPDATE verdict_events SET quarter = CAST(time / 900 AS INTEGER), "
                   f"score_bin = MIN(MAX(CAST(score * {SCORE_BINS} AS INTEGER), 0), {SCORE_BINS - 1})")
    else:
        op.execute("UPDATE verdict_events SET quarter = CAST(FLOOR(time / 900) AS INTEGER), "
                   f"score_bin = LEAST(GREATEST(CAST(FLOOR(score * {SCORE_BINS}) AS INTEGER), 0), "
                   f"{SCORE_BINS - 1})")
    op.create_index("ix_verdict_events_tool_time", "verdict_events", ["tool", "time"])
    op.create_index("ix_verdict_events_station_time", "verdict_events", ["station", "time"])
    op.create_index("ix_tool_changes_tool_time", "tool_changes", ["tool", "time"])

    def key(name: str, kind: sa.types.TypeEngine) -> sa.Column:
        return sa.Column(name, kind, nullable=False)

    _count_table("event_counts", key("station", sa.String()), key("tool", sa.String()),
                 key("quarter", sa.Integer()), key("cause", sa.String()), key("verdict", sa.String()),
                 key("defect_class", sa.String()))
    _count_table("score_counts", key("station", sa.String()), key("tool", sa.String()),
                 key("day", sa.Integer()), key("cause", sa.String()), key("verdict", sa.String()),
                 key("score_bin", sa.Integer()))
    _count_table("part_counts", key("station", sa.String()), key("quarter", sa.Integer()),
                 counts=("parts", "failed"))
    op.execute("INSERT INTO event_counts (station, tool, quarter, cause, verdict, defect_class, n) "
               "SELECT station, tool, quarter, cause, verdict, COALESCE(defect_class, ''), COUNT(*) "
               "FROM verdict_events "
               "GROUP BY station, tool, quarter, cause, verdict, COALESCE(defect_class, '')")
    op.execute("INSERT INTO score_counts (station, tool, day, cause, verdict, score_bin, n) "
               "SELECT station, tool, quarter / 96, cause, verdict, score_bin, COUNT(*) "
               "FROM verdict_events GROUP BY station, tool, quarter / 96, cause, verdict, score_bin")
    op.execute("INSERT INTO part_counts (station, quarter, parts, failed) "
               "SELECT station, quarter, COUNT(*), SUM(failed) FROM ("
               "SELECT station, quarter, MAX(CASE WHEN verdict = 'FAIL' THEN 1 ELSE 0 END) AS failed "
               f"FROM verdict_events WHERE cause IN {PART_CAUSES} "
               "GROUP BY station, quarter, camera, time) AS parts GROUP BY station, quarter")

    op.create_table(
        "fail_images",
        sa.Column("event_id", ID, sa.ForeignKey("verdict_events.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("time", sa.Double(), nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
    )
    op.create_index("ix_fail_images_time", "fail_images", ["time"])


def downgrade() -> None:
    op.drop_table("fail_images")
    for table in ("part_counts", "score_counts", "event_counts"):
        op.drop_table(table)
    op.drop_index("ix_tool_changes_tool_time", "tool_changes")
    op.drop_index("ix_verdict_events_station_time", "verdict_events")
    op.drop_index("ix_verdict_events_tool_time", "verdict_events")
    op.drop_column("verdict_events", "score_bin")
    op.drop_column("verdict_events", "quarter")
