"""Reruns seen ended, by hand or by rerund: evidence from the control plane (issue 27).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reruns_seen",
        sa.Column("target_key", sa.Text, nullable=False),
        sa.Column("source_key", sa.Text, nullable=False),
        sa.Column("phase", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("target_key", name="reruns_seen_pkey"),
    )
    op.create_index("reruns_seen_source", "reruns_seen", ["source_key"])


def downgrade() -> None:
    op.drop_index("reruns_seen_source", table_name="reruns_seen")
    op.drop_table("reruns_seen")
