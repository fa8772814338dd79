"""Issue 15: a tenant's require_deidentified setting, and the released-results feed

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 05:00:00

``tenant.require_deidentified`` (nullable: the hub's default) makes STOW-RS accept only
instances whose Patient Identity Removed (0012,0062) is YES (PS3.15 Annex E).
``ix_ai_result_released`` serves ``GET /api/v1/results?released_after=…`` (released
results of a tenant in release order). Failed and cancelled results count as released
when they end (nothing to review): existing ones get their completion time.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("tenant", sa.Column("require_deidentified", sa.Boolean(), nullable=True))
    op.create_index(
        "ix_ai_result_released", "ai_result", ["tenant", "released_at", "pk"], unique=False
    )
    op.execute(
        "UPDATE ai_result SET released_at = COALESCE(completed_at, created_at) "
        "WHERE released_at IS NULL AND outcome IN ('failed', 'cancelled')"
    )


def downgrade() -> None:
    op.drop_index("ix_ai_result_released", table_name="ai_result")
    op.drop_column("tenant", "require_deidentified")  # SQLite 3.35+ drops it in place
