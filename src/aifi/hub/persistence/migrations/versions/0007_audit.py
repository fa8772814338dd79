"""Audit trail (issue 6): the append-only audit_event table and the export cursors

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 20:10:00

``audit_event`` refuses UPDATE and DELETE at the database level (triggers; PostgreSQL also
TRUNCATE), so no API, bug or operator mistake through the application changes the trail
(IHE ITI TF-1 ATNA, IHE BALP). Export positions live in ``audit_cursor``.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_SQLITE_TRIGGERS = (
    """CREATE TRIGGER audit_event_no_update BEFORE UPDATE ON audit_event
    BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END""",
    """CREATE TRIGGER audit_event_no_delete BEFORE DELETE ON audit_event
    BEGIN SELECT RAISE(ABORT, 'audit_event is append-only'); END""",
)
_POSTGRES_TRIGGERS = (
    """CREATE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'audit_event is append-only (%)', TG_OP; END $$""",
    """CREATE TRIGGER audit_event_no_change BEFORE UPDATE OR DELETE ON audit_event
    FOR EACH ROW EXECUTE FUNCTION audit_event_append_only()""",
    """CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
    FOR EACH STATEMENT EXECUTE FUNCTION audit_event_append_only()""",
)


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=1), nullable=False),
        sa.Column("interaction", sa.String(length=24), nullable=False),
        sa.Column("event_code", sa.String(length=16), nullable=False),
        sa.Column("subtype", sa.String(length=40), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("path", sa.String(length=200), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("patient_issuer", sa.String(length=64), nullable=True),
        sa.Column("patient_ref", sa.String(length=40), nullable=True),
        sa.Column("study_uid", sa.String(length=64), nullable=True),
        sa.Column("entity", sa.Text(), nullable=False),
        sa.Column("query", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
    )
    op.create_index("ix_audit_event_recorded", "audit_event", ["tenant", "recorded_at"])
    op.create_index("ix_audit_event_patient", "audit_event", ["tenant", "patient_id"])
    op.create_index("ix_audit_event_patient_ref", "audit_event", ["tenant", "patient_ref"])
    op.create_index("ix_audit_event_study", "audit_event", ["tenant", "study_uid"])
    op.create_index("ix_audit_event_client", "audit_event", ["tenant", "client_id"])
    op.create_table(
        "audit_cursor",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=400), nullable=False),
        sa.Column("last_pk", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("name", name="uq_audit_cursor_name"),
    )
    triggers = (
        _POSTGRES_TRIGGERS if op.get_bind().dialect.name == "postgresql" else (_SQLITE_TRIGGERS)
    )
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_event")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_change ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_delete")
        op.execute("DROP TRIGGER IF EXISTS audit_event_no_update")
    op.drop_table("audit_cursor")
    op.drop_index("ix_audit_event_client", table_name="audit_event")
    op.drop_index("ix_audit_event_study", table_name="audit_event")
    op.drop_index("ix_audit_event_patient_ref", table_name="audit_event")
    op.drop_index("ix_audit_event_patient", table_name="audit_event")
    op.drop_index("ix_audit_event_recorded", table_name="audit_event")
    op.drop_table("audit_event")
