"""Gateway: the FHIR relay (EPD Subscriptions, followed hub queries, notifications, EPD push)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 21:00:00.000000
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _outbox_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "gw_fhir_follow",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("cursor", sa.String(length=40), nullable=False),
        sa.Column("boundary", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_poll_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "gw_fhir_subscription",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant", sa.String(length=64), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("events_since_start", sa.Integer(), nullable=False),
        sa.Column("handshake_done", sa.Boolean(), nullable=False),
        sa.Column("heartbeat_seconds", sa.Integer(), nullable=True),
        sa.Column("next_heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("endpoint_error", sa.Text(), nullable=True),
        sa.Column("hub_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "gw_fhir_notification",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("event_number", sa.Integer(), nullable=True),
        sa.Column("focus", sa.Text(), nullable=True),
        *_outbox_columns(),
        sa.PrimaryKeyConstraint("pk"),
    )
    with op.batch_alter_table("gw_fhir_notification") as batch:
        batch.create_index("ix_gw_fhir_notification_due", ["state", "next_attempt_at"])
        batch.create_index("ix_gw_fhir_notification_subscription", ["subscription_id", "state"])
    op.create_table(
        "gw_epd_push",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("report_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.String(length=16), nullable=False),
        *_outbox_columns(),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("report_id", name="uq_gw_epd_push_report"),
    )
    with op.batch_alter_table("gw_epd_push") as batch:
        batch.create_index("ix_gw_epd_push_due", ["state", "next_attempt_at"])


def downgrade() -> None:
    with op.batch_alter_table("gw_epd_push") as batch:
        batch.drop_index("ix_gw_epd_push_due")
    op.drop_table("gw_epd_push")
    with op.batch_alter_table("gw_fhir_notification") as batch:
        batch.drop_index("ix_gw_fhir_notification_subscription")
        batch.drop_index("ix_gw_fhir_notification_due")
    op.drop_table("gw_fhir_notification")
    op.drop_table("gw_fhir_subscription")
    op.drop_table("gw_fhir_follow")
