"""Issue 18 point 4: the conformance reports the operator recorded

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-09 10:00:00

``conformance_report``: one ``report.json`` of the conformance kit as it was handed over
(``aifi clients add --conformance-report``), with the product, kind, tool version, the run's
end, whether the hub found it passing and the file's SHA-256 (one row per file).
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "conformance_report",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("product", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("tool_version", sa.String(length=64), nullable=False),
        sa.Column("finished", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("recorded_by", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("sha256", name="uq_conformance_report_sha256"),
    )
    op.create_index(
        "ix_conformance_report_product",
        "conformance_report",
        ["product", "kind", "passed", "finished"],
    )


def downgrade() -> None:
    op.drop_index("ix_conformance_report_product", table_name="conformance_report")
    op.drop_table("conformance_report")
