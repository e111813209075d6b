"""The outage breaker's incidents (issue 27).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("fingerprint", sa.Text, nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("fingerprint", "opened_at", name="incidents_pkey"),
    )
    op.create_index("incidents_state", "incidents", ["state", "at"])


def downgrade() -> None:
    op.drop_index("incidents_state", table_name="incidents")
    op.drop_table("incidents")
