"""The review queue: priorities, daily budgets, re-posts, redraws and the daily digest.

Prompts get their task (so a task's queue is one index range), a priority (the order people are
asked in), when Slack last took their message, when they were queued to be posted again, and
whether their message must be redrawn. Tasks get a daily budget and the day of their last digest.

Prompts posted before this revision keep `posted_at` empty: they count for no budget and are
never re-posted (otherwise an upgrade would post a deployment's whole backlog again at once).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TASK_COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.Column("daily_budget", sa.Integer(), nullable=True),
    sa.Column("digest_on", sa.Date(), nullable=True),
)
_PROMPT_COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.Column("task_id", sa.Integer(), nullable=True),
    sa.Column("priority", sa.Float(), nullable=False, server_default="0"),
    sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("reposted_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("redraw_at", sa.DateTime(timezone=True), nullable=True),
)


def upgrade() -> None:
    for column in _TASK_COLUMNS:
        op.add_column("task", column)
    for column in _PROMPT_COLUMNS:
        op.add_column("review_prompt", column)
    op.execute(
        "UPDATE review_prompt SET task_id = "
        "(SELECT item.task_id FROM item WHERE item.id = review_prompt.item_id)"
    )
    op.create_index(
        "ix_review_prompt_queue",
        "review_prompt",
        ["task_id", "status", sa.text("priority DESC"), "id"],
    )
    op.create_index("ix_review_prompt_task_posted", "review_prompt", ["task_id", "posted_at"])
    op.create_index("ix_review_prompt_redraw_at", "review_prompt", ["redraw_at"])


def downgrade() -> None:
    # SQLite drops a column in place only once no index covers it.
    op.drop_index("ix_review_prompt_redraw_at", table_name="review_prompt")
    op.drop_index("ix_review_prompt_task_posted", table_name="review_prompt")
    op.drop_index("ix_review_prompt_queue", table_name="review_prompt")
    # Both SQLite (3.35+) and PostgreSQL drop a plain column in place.
    for column in _PROMPT_COLUMNS:
        op.execute(f"ALTER TABLE review_prompt DROP COLUMN {column.name}")
    for column in _TASK_COLUMNS:
        op.execute(f"ALTER TABLE task DROP COLUMN {column.name}")
