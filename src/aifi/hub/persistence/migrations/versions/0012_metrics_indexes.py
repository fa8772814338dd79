"""Issue 19 point 4: covering indexes for ``/metrics``

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08 01:00:00

``/metrics`` reads workitems by tenant, product and state, and results by tenant, product and
outcome with their turnaround, at every scrape. Without these indexes both were full table
scans (``aifi bench metrics``: about 30 ms of a 50 ms budget with 10,000 results).
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_workitem_product_state",
        "workitem",
        ["tenant", "product", "procedure_step_state"],
        unique=False,
    )
    op.create_index(
        "ix_ai_result_metrics",
        "ai_result",
        ["tenant", "product", "outcome", "workitem_created_at", "completed_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_ai_result_metrics", table_name="ai_result")
    op.drop_index("ix_workitem_product_state", table_name="workitem")
