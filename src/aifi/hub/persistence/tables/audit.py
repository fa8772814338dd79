"""The audit trail (IHE BALP): records and the export cursor."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from aifi.clock import utc_now


class AuditRecord(SQLModel, table=True):
    """One access to patient-related data (IHE Basic Audit Log Patterns; DICOM PS3.15
    A.5): who (``client_id``, ``role``, ``tenant``, ``address``), what (``action``,
    ``interaction``, ``event_code``, ``method`` + ``path`` template, ``entity``, ``query``),
    when (``recorded_at``), the ``outcome`` (FHIR AuditEvent.outcome 0/4/8/12, with the HTTP
    status) and which patient (``patient_id`` with its issuer, ``study_uid``).

    Append-only: the migration (0007) adds triggers that refuse UPDATE and DELETE on SQLite
    and PostgreSQL. Exports keep their position in :class:`AuditCursor`, never here."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_recorded", "tenant", "recorded_at"),
        Index("ix_audit_event_patient", "tenant", "patient_id"),
        Index("ix_audit_event_patient_ref", "tenant", "patient_ref"),
        Index("ix_audit_event_study", "tenant", "study_uid"),
        Index("ix_audit_event_client", "tenant", "client_id"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str | None = Field(default=None, max_length=63)
    """The caller's tenant; None when the caller could not be identified (bad token)."""
    recorded_at: datetime = Field(default_factory=utc_now)
    action: str = Field(max_length=1)
    """FHIR AuditEvent.action / DICOM EventActionCode: C R U D E."""
    interaction: str = Field(max_length=24)
    """create, read, search, update, delete, execute, export."""
    event_code: str = Field(max_length=16)
    """DICOM Event ID (DCM 110103, 110104, 110106, 110112) or ``rest`` (a FHIR access)."""
    subtype: str = Field(max_length=40)
    """The FHIR restful-interaction, the DICOMweb service (STOW-RS, QIDO-RS, WADO-RS,
    UPS-RS, the hub's API) or the export channel."""
    outcome: int
    http_status: int | None = None
    client_id: str = Field(max_length=64)
    role: str = Field(default="", max_length=16)
    address: str | None = Field(default=None, max_length=64)
    method: str = Field(default="", max_length=8)
    path: str = Field(default="", max_length=200)
    """The route's path template (``/dicomweb/studies/{study}``), never the filled path."""
    patient_id: str | None = Field(default=None, max_length=64)
    patient_issuer: str | None = Field(default=None, max_length=64)
    patient_ref: str | None = Field(default=None, max_length=40)
    """The FHIR Patient id the AuditEvent names (``aifi.fhir.mapping.patient_id``), for
    ``AuditEvent?patient=Patient/…`` searches."""
    study_uid: str | None = Field(default=None, max_length=64)
    entity: str = Field(default="[]", sa_type=Text)
    """JSON list of the entities touched: ``{"kind", "id", ...}`` (workitem, FHIR
    resource, series, instance, destination, ...)."""
    query: str | None = Field(default=None, sa_type=Text)
    """The query string of a search (BALP Query pattern)."""


class AuditCursor(SQLModel, table=True):
    """How far an export of the audit trail got (the FHIR projection, each syslog
    destination): the last ``audit_event.pk`` it handed on."""

    __tablename__ = "audit_cursor"
    __table_args__ = (UniqueConstraint("name", name="uq_audit_cursor_name"),)

    pk: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=400)
    last_pk: int = 0
    updated_at: datetime = Field(default_factory=utc_now)
