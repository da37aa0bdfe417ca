"""Several replicas on one database: prompt claims with an owner and a lease, shared pacing.

A prompt being sent records which replica holds it (`claimed_by`) and until when
(`lease_until`): another replica takes it over only after the lease, and a replica shutting down
gives back exactly its own. `channel_turn` holds, per channel, when the next message may go, so
that replicas together keep Slack's pace of about one message a second per channel.

Prompts already `sending` at upgrade get no lease: they are taken over as before, by their age.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PROMPT_COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.Column("claimed_by", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
)


def upgrade() -> None:
    for column in _PROMPT_COLUMNS:
        op.add_column("review_prompt", column)
    op.create_table(
        "channel_turn",
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("next_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel", name="pk_channel_turn"),
    )


def downgrade() -> None:
    op.drop_table("channel_turn")
    for column in _PROMPT_COLUMNS:
        op.execute(f"ALTER TABLE review_prompt DROP COLUMN {column.name}")
