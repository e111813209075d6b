"""The ledger's tables, as the SQLite ledger has them (issue 25).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "failures",
        sa.Column("run_key", sa.Text, nullable=False),
        sa.Column("project", sa.Text, nullable=False),
        sa.Column("domain", sa.Text, nullable=False),
        sa.Column("run", sa.Text, nullable=False),
        sa.Column("failed_at", _TS, nullable=False),
        sa.Column("seen_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("run_key", name="failures_pkey"),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("run_key", sa.Text, nullable=False),
        sa.Column("project", sa.Text, nullable=False),
        sa.Column("domain", sa.Text, nullable=False),
        sa.Column("run", sa.Text, nullable=False),
        sa.Column("root", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=True),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default="daemon"),
        sa.Column("fingerprint", sa.Text, nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="decisions_pkey"),
    )
    op.execute(
        "CREATE UNIQUE INDEX decisions_once ON decisions (run_key, decision, policy, coalesce(attempt, -1))"
    )
    for column in ("run", "root", "at", "fingerprint"):
        op.create_index(f"decisions_{column}", "decisions", [column])
    op.create_table(
        "issues",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("source_key", sa.Text, nullable=False),
        sa.Column("target_key", sa.Text, nullable=False),
        sa.Column("project", sa.Text, nullable=False),
        sa.Column("domain", sa.Text, nullable=False),
        sa.Column("target", sa.Text, nullable=False),
        sa.Column("root", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("source", sa.Text, nullable=False, server_default="daemon"),
        sa.PrimaryKeyConstraint("id", name="issues_pkey"),
        sa.UniqueConstraint("target_key", "result", name="issues_target_key_result_key"),
    )
    op.create_index("issues_root", "issues", ["root"])
    op.create_index("issues_at", "issues", ["at"])
    op.create_table(
        "outcomes",
        sa.Column("target_key", sa.Text, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("root", sa.Text, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("phase", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("target_key", name="outcomes_pkey"),
    )
    op.create_index("outcomes_at", "outcomes", ["at"])
    op.create_table(
        "watermarks",
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("scope", name="watermarks_pkey"),
    )
    op.create_table(
        "reproductions",
        sa.Column("id", sa.BigInteger, sa.Identity(), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("check_name", sa.Text, nullable=False),
        sa.Column("scheduled_for", _TS, nullable=False),
        sa.Column("manual", sa.Boolean, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("project", sa.Text, nullable=False),
        sa.Column("domain", sa.Text, nullable=False),
        sa.Column("reference", sa.Text, nullable=True),
        sa.Column("rerun", sa.Text, nullable=True),
        sa.Column("diff", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="reproductions_pkey"),
        sa.UniqueConstraint(
            "check_name", "scheduled_for", "manual", name="reproductions_check_name_scheduled_for_manual_key"
        ),
    )
    op.create_index("reproductions_check", "reproductions", ["check_name", "scheduled_for"])


def downgrade() -> None:
    for table in ("reproductions", "watermarks", "outcomes", "issues", "decisions", "failures"):
        op.drop_table(table)
