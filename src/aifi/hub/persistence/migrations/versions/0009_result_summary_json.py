"""Issue 16: a result instance keeps what it reports, summarised once by the gate

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 09:00:00

``result_instance.summary_json``: the findings and measurements of the instance's
``ResultSummary`` (IHE AIR), as JSON, written by the result gate when it accepts the
instance, so that the FHIR projection no longer summarises the stored instance again.
Nullable and not backfilled: rows stored before this revision keep NULL, and their readers
summarise the stored instance as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("result_instance", sa.Column("summary_json", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("result_instance", "summary_json")  # SQLite 3.35+ drops it in place
