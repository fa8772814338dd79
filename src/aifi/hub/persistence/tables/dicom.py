"""The DICOM index: tenants, studies, series, instances (with the QIDO-RS matching keys,
PS3.18 §10.6.1.3)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from aifi.clock import utc_now as _now


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"

    id: str = Field(primary_key=True, max_length=63)
    name: str = Field(default="", max_length=200)
    require_deidentified: bool | None = None
    """STOW-RS accepts only instances with Patient Identity Removed (0012,0062) YES from this
    tenant's callers (:mod:`aifi.hub.store.deidentified`); ``None``: the hub's default
    (``Settings.require_deidentified``)."""
    created_at: datetime = Field(default_factory=_now)


class Study(SQLModel, table=True):
    __tablename__ = "study"
    __table_args__ = (
        UniqueConstraint("tenant", "study_instance_uid", name="uq_study_uid"),
        Index("ix_study_patient_id", "tenant", "patient_id"),
        Index("ix_study_patient_name", "tenant", "patient_name"),
        Index("ix_study_patient_name_fuzzy", "tenant", "patient_name_fuzzy"),
        Index("ix_study_date", "tenant", "study_date", "study_time"),
        Index("ix_study_accession", "tenant", "accession_number"),
        Index("ix_study_patient_name_ci", "tenant", "patient_name_ci"),
        Index("ix_study_referring_ci", "tenant", "referring_physician_name_ci"),
        Index("ix_study_datetime", "tenant", "study_datetime"),
        Index("ix_study_updated", "updated_at"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    study_instance_uid: str = Field(max_length=64)
    study_date: str | None = Field(default=None, max_length=8)
    study_time: str | None = Field(default=None, max_length=16)
    accession_number: str | None = Field(default=None, max_length=64)
    patient_name: str | None = Field(default=None, max_length=400)
    patient_name_fuzzy: str | None = Field(default=None, max_length=400)
    patient_name_ci: str | None = Field(default=None, max_length=400)
    """Case-folded name for literal PN matching (:func:`aifi.dicomweb.vr_values.pn_ci`)."""
    patient_id: str | None = Field(default=None, max_length=64)
    study_id: str | None = Field(default=None, max_length=16)
    referring_physician_name: str | None = Field(default=None, max_length=400)
    referring_physician_name_fuzzy: str | None = Field(default=None, max_length=400)
    referring_physician_name_ci: str | None = Field(default=None, max_length=400)
    study_datetime: str | None = Field(default=None, max_length=32)
    """Study Date + normalised Study Time (``YYYYMMDDHHMMSS.ffffff``, or only the date when
    there is no time), for combined date-time range matching (PS3.4 C.2.2.2.5.1)."""
    study_description: str | None = Field(default=None, max_length=400)
    modalities_in_study: str = Field(default="", max_length=400)
    """Distinct modalities as ``|CT|SR|`` (delimited on both sides for LIKE matching)."""
    sop_classes_in_study: str = Field(default="", max_length=4000)
    number_of_series: int = 0
    number_of_instances: int = 0
    attributes: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    """zlib-compressed DICOM JSON of the study-level attributes (first instance received)."""
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class Series(SQLModel, table=True):
    __tablename__ = "series"
    __table_args__ = (
        UniqueConstraint("tenant", "series_instance_uid", name="uq_series_uid"),
        Index("ix_series_study", "study_pk"),
        Index("ix_series_modality", "tenant", "modality"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    study_pk: int = Field(foreign_key="study.pk")
    series_instance_uid: str = Field(max_length=64)
    modality: str | None = Field(default=None, max_length=16)
    series_number: int | None = None
    pps_start_date: str | None = Field(default=None, max_length=8)
    pps_start_time: str | None = Field(default=None, max_length=16)
    number_of_instances: int = 0
    attributes: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=_now)


class Instance(SQLModel, table=True):
    __tablename__ = "instance"
    __table_args__ = (
        UniqueConstraint("tenant", "sop_instance_uid", name="uq_instance_uid"),
        Index("ix_instance_series", "series_pk"),
        Index("ix_instance_study", "study_pk"),
        Index("ix_instance_sop_class", "tenant", "sop_class_uid"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    study_pk: int = Field(foreign_key="study.pk")
    series_pk: int = Field(foreign_key="series.pk")
    sop_instance_uid: str = Field(max_length=64)
    sop_class_uid: str = Field(max_length=64)
    instance_number: int | None = None
    number_of_frames: int | None = None
    rows: int | None = None
    columns: int | None = None
    bits_allocated: int | None = None
    transfer_syntax_uid: str = Field(max_length=64)
    path: str = Field(max_length=400)
    """Relative to the DICOM folder: ``<tenant>/<study>/<series>/<sop>.<sha256[:16]>.dcm``."""
    size: int
    sha256: str = Field(max_length=64)
    attributes: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    """zlib-compressed DICOM JSON of the whole instance, bulk data as relative URIs."""
    created_at: datetime = Field(default_factory=_now)
