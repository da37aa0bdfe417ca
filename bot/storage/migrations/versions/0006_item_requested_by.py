"""Items sent from Slack ("Send to hitl") remember who sent them, to tell them the answer.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("item", sa.Column("requested_by", sa.String(length=64), nullable=True))


def downgrade() -> None:
    # Both SQLite (3.35+) and PostgreSQL drop a plain column in place.
    op.execute("ALTER TABLE item DROP COLUMN requested_by")
