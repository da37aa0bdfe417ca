"""Answers record where they came from (Slack, import, spot check), so every label counts once.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "answer", sa.Column("source", sa.String(length=16), nullable=False, server_default="slack")
    )
    op.execute("UPDATE answer SET source = 'import' WHERE user_id = 'import'")


def downgrade() -> None:
    # Both SQLite (3.35+) and PostgreSQL drop a plain column in place; a batch rebuild would
    # have to re-create the partial unique index by hand.
    op.execute("ALTER TABLE answer DROP COLUMN source")
