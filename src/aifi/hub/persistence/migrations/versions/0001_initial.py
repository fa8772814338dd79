"""initial schema: tenants, studies, series, instances

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-23 06:14:42.184540
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "tenant",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "study",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=True),
        sa.Column("study_time", sa.String(length=16), nullable=True),
        sa.Column("accession_number", sa.String(length=64), nullable=True),
        sa.Column("patient_name", sa.String(length=400), nullable=True),
        sa.Column("patient_name_fuzzy", sa.String(length=400), nullable=True),
        sa.Column("patient_name_ci", sa.String(length=400), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("study_id", sa.String(length=16), nullable=True),
        sa.Column("referring_physician_name", sa.String(length=400), nullable=True),
        sa.Column("referring_physician_name_fuzzy", sa.String(length=400), nullable=True),
        sa.Column("referring_physician_name_ci", sa.String(length=400), nullable=True),
        sa.Column("study_datetime", sa.String(length=32), nullable=True),
        sa.Column("study_description", sa.String(length=400), nullable=True),
        sa.Column("modalities_in_study", sa.String(length=400), nullable=False),
        sa.Column("sop_classes_in_study", sa.String(length=4000), nullable=False),
        sa.Column("number_of_series", sa.Integer(), nullable=False),
        sa.Column("number_of_instances", sa.Integer(), nullable=False),
        sa.Column("attributes", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("tenant", "study_instance_uid", name="uq_study_uid"),
    )
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.create_index("ix_study_accession", ["tenant", "accession_number"], unique=False)
        batch_op.create_index("ix_study_date", ["tenant", "study_date", "study_time"], unique=False)
        batch_op.create_index("ix_study_patient_id", ["tenant", "patient_id"], unique=False)
        batch_op.create_index("ix_study_patient_name", ["tenant", "patient_name"], unique=False)
        batch_op.create_index(
            "ix_study_patient_name_fuzzy", ["tenant", "patient_name_fuzzy"], unique=False
        )
        batch_op.create_index(
            "ix_study_patient_name_ci", ["tenant", "patient_name_ci"], unique=False
        )
        batch_op.create_index(
            "ix_study_referring_ci", ["tenant", "referring_physician_name_ci"], unique=False
        )
        batch_op.create_index("ix_study_datetime", ["tenant", "study_datetime"], unique=False)

    op.create_table(
        "series",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=True),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("pps_start_date", sa.String(length=8), nullable=True),
        sa.Column("pps_start_time", sa.String(length=16), nullable=True),
        sa.Column("number_of_instances", sa.Integer(), nullable=False),
        sa.Column("attributes", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["study.pk"],
        ),
        sa.ForeignKeyConstraint(
            ["tenant"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("tenant", "series_instance_uid", name="uq_series_uid"),
    )
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.create_index("ix_series_modality", ["tenant", "modality"], unique=False)
        batch_op.create_index("ix_series_study", ["study_pk"], unique=False)

    op.create_table(
        "instance",
        sa.Column("pk", sa.Integer(), nullable=False),
        sa.Column("tenant", sa.String(length=63), nullable=False),
        sa.Column("study_pk", sa.Integer(), nullable=False),
        sa.Column("series_pk", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("instance_number", sa.Integer(), nullable=True),
        sa.Column("number_of_frames", sa.Integer(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("columns", sa.Integer(), nullable=True),
        sa.Column("bits_allocated", sa.Integer(), nullable=True),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=400), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("attributes", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_pk"],
            ["series.pk"],
        ),
        sa.ForeignKeyConstraint(
            ["study_pk"],
            ["study.pk"],
        ),
        sa.ForeignKeyConstraint(
            ["tenant"],
            ["tenant.id"],
        ),
        sa.PrimaryKeyConstraint("pk"),
        sa.UniqueConstraint("tenant", "sop_instance_uid", name="uq_instance_uid"),
    )
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.create_index("ix_instance_series", ["series_pk"], unique=False)
        batch_op.create_index("ix_instance_sop_class", ["tenant", "sop_class_uid"], unique=False)
        batch_op.create_index("ix_instance_study", ["study_pk"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_index("ix_instance_study")
        batch_op.drop_index("ix_instance_sop_class")
        batch_op.drop_index("ix_instance_series")

    op.drop_table("instance")
    with op.batch_alter_table("series", schema=None) as batch_op:
        batch_op.drop_index("ix_series_study")
        batch_op.drop_index("ix_series_modality")

    op.drop_table("series")
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_index("ix_study_datetime")
        batch_op.drop_index("ix_study_referring_ci")
        batch_op.drop_index("ix_study_patient_name_ci")
        batch_op.drop_index("ix_study_patient_name_fuzzy")
        batch_op.drop_index("ix_study_patient_name")
        batch_op.drop_index("ix_study_patient_id")
        batch_op.drop_index("ix_study_date")
        batch_op.drop_index("ix_study_accession")

    op.drop_table("study")
    op.drop_table("tenant")
