"""Issue 17: prior-study requests of comparison products, and the studies registered as priors

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 21:00:00

``prior_request``: one per workitem of a product whose routing rules declare ``priors``
(open until the hospital's gateway answers or the deadline passes). ``prior_study``: the
studies the gateway registered for a request, which the Task Manager never routes.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prior_request",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("workitem_uid", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("product", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("same_modality", sa.Boolean(), nullable=False),
        sa.Column("same_body_part", sa.Boolean(), nullable=False),
        sa.Column("within_days", sa.Integer(), nullable=False),
        sa.Column("modalities", sa.String(length=200), nullable=False),
        sa.Column("body_parts", sa.String(length=400), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["tenant"], ["tenant.id"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("tenant", "request_id", name="uq_prior_request_id"),
    )
    op.create_index("ix_prior_request_open", "prior_request", ["state", "deadline"])
    op.create_index("ix_prior_request_workitem", "prior_request", ["tenant", "workitem_uid"])
    op.create_table(
        "prior_study",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("request_pk", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["request_pk"], ["prior_request.pk"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("tenant", "study_instance_uid", "request_pk", name="uq_prior_study"),
    )
    op.create_index("ix_prior_study_uid", "prior_study", ["tenant", "study_instance_uid"])


def downgrade() -> None:
    op.drop_index("ix_prior_study_uid", table_name="prior_study")
    op.drop_table("prior_study")
    op.drop_index("ix_prior_request_workitem", table_name="prior_request")
    op.drop_index("ix_prior_request_open", table_name="prior_request")
    op.drop_table("prior_request")
