"""Gateway: results back from the hub (feed cursor, results, re-identified files, PACS outbox)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 04:58:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gw_result_feed",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("cursor", sa.String(length=200), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "gw_result",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("workitem_uid", sa.String(length=64), nullable=False),
        sa.Column("pseudo_study_uid", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("product", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("hub_reason", sa.Text(), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("workitem_uid", name="uq_gw_result_workitem"),
    )
    with op.batch_alter_table("gw_result", schema=None) as batch_op:
        batch_op.create_index("ix_gw_result_due", ["state", "next_attempt_at"], unique=False)

    op.create_table(
        "gw_result_instance",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("result_pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("pseudo_sop_instance_uid", sa.String(length=64), nullable=True),
        sa.Column("file", sa.String(length=500), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["result_pk"], ["gw_result.pk"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("result_pk", "sop_instance_uid", name="uq_gw_result_instance"),
    )
    with op.batch_alter_table("gw_result_instance", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_gw_result_instance_result_pk"), ["result_pk"], unique=False
        )

    op.create_table(
        "gw_result_delivery",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("result_pk", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_sop_uids", sa.Text(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["result_pk"], ["gw_result.pk"]),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("result_pk", "destination", name="uq_gw_result_delivery"),
    )
    with op.batch_alter_table("gw_result_delivery", schema=None) as batch_op:
        batch_op.create_index(
            "ix_gw_result_delivery_due", ["state", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("gw_result_delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_gw_result_delivery_due")
    op.drop_table("gw_result_delivery")
    with op.batch_alter_table("gw_result_instance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_gw_result_instance_result_pk"))
    op.drop_table("gw_result_instance")
    with op.batch_alter_table("gw_result", schema=None) as batch_op:
        batch_op.drop_index("ix_gw_result_due")
    op.drop_table("gw_result")
    op.drop_table("gw_result_feed")
