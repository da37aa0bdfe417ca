"""Outbound webhooks: a URL and signing secret per task, and the outbox of their events.

`webhook_delivery` holds one row per result of an item (resolved, corrected, reopened), written
in the transaction that changed the item and sent by the webhook worker (`bot.webhooks`).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-11
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TASK_COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.Column("webhook_url", sa.String(2000), nullable=True),
    sa.Column("webhook_secret", sa.String(64), nullable=True),
)


def upgrade() -> None:
    for column in _TASK_COLUMNS:
        op.add_column("task", column)
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.String(32), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_by", sa.String(64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["task.id"],
            name="fk_webhook_delivery_task_id_task",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["item_id"],
            ["item.id"],
            name="fk_webhook_delivery_item_id_item",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_delivery"),
        sa.UniqueConstraint("delivery_id", name="uq_webhook_delivery_delivery_id"),
        sa.UniqueConstraint("item_id", "sequence", name="uq_webhook_delivery_item_sequence"),
    )
    op.create_index("ix_webhook_delivery_due", "webhook_delivery", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_delivery_task_status", "webhook_delivery", ["task_id", "status"])


def downgrade() -> None:
    op.drop_table("webhook_delivery")
    # Both SQLite (3.35+) and PostgreSQL drop a plain column in place.
    for column in _TASK_COLUMNS:
        op.execute(f"ALTER TABLE task DROP COLUMN {column.name}")
