"""Gateway: re-identified result files are purged once delivered (gw_result_instance.purged_at)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 12:40:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("gw_result_instance") as batch:
        batch.add_column(sa.Column("purged_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("gw_result_instance") as batch:
        batch.drop_column("purged_at")
