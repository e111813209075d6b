"""The leadership row and the outbox: which replica leads, notifications sent once (issue 25).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leadership",
        sa.Column("id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("term", sa.BigInteger, nullable=False),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("since", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="leadership_pkey"),
    )
    op.create_table(
        "outbox",
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("next_at", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("delivered_at", sa.Text, nullable=True),
        sa.Column("claimed_by", sa.Text, nullable=True),
        sa.Column("claimed_term", sa.BigInteger, nullable=True),
        sa.PrimaryKeyConstraint("key", name="outbox_pkey"),
    )
    op.create_index("outbox_next_at", "outbox", ["next_at"])


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_table("leadership")
