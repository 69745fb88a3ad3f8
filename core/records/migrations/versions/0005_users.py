"""The station's users: name, role, Argon2 hashes of the password and PIN, lockout state.

Downgrade drops the table (the older app has no logins).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),  # Argon2id, never the password
        sa.Column("pin_hash", sa.String()),  # operators only
        sa.Column("failures", sa.Integer(), nullable=False),  # wrong secrets in a row
        sa.Column("locked_until", sa.Double()),  # seconds since the epoch
        sa.Column("created", sa.Double(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("users")
