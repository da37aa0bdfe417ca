"""Trust in automatic answers: target precision, spot checks, several reviewers, pinned models.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TASK_COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.Column("target_precision", sa.Float(), nullable=True),
    sa.Column("precision_lower_bound", sa.Float(), nullable=True),
    sa.Column("threshold_evidence", sa.JSON(), nullable=True),
    sa.Column("threshold_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("spot_check_rate", sa.Float(), nullable=False, server_default="0.02"),
    sa.Column("votes_required", sa.Integer(), nullable=False, server_default="1"),
    sa.Column("precision_alert_at", sa.DateTime(timezone=True), nullable=True),
)
_ITEM_COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.Column("spot_check", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("votes_required", sa.Integer(), nullable=True),
    sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
)


def upgrade() -> None:
    for column in _TASK_COLUMNS:
        op.add_column("task", column)
    for column in _ITEM_COLUMNS:
        op.add_column("item", column)
    op.add_column(
        "model_version",
        sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    # Both SQLite (3.35+) and PostgreSQL drop a plain column in place.
    op.execute("ALTER TABLE model_version DROP COLUMN pinned")
    for column in _ITEM_COLUMNS:
        op.execute(f"ALTER TABLE item DROP COLUMN {column.name}")
    for column in _TASK_COLUMNS:
        op.execute(f"ALTER TABLE task DROP COLUMN {column.name}")
