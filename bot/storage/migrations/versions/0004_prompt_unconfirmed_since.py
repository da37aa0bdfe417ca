"""Prompts remember when an attempt with an unknown outcome began, so a re-post looks first.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "review_prompt", sa.Column("unconfirmed_since", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    # Both SQLite (3.35+) and PostgreSQL drop a plain column in place.
    op.execute("ALTER TABLE review_prompt DROP COLUMN unconfirmed_since")
