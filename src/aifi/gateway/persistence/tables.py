"""The gateway's own database tables (SQLModel; Alembic migrations in ``migrations/``).

The gateway's database lives in the hospital, next to the gateway, and is the only place
where a pseudonym and the identity behind it meet (PS3.15 Annex E: the mapping stays with
the party that de-identified). Three groups of tables:

* **ingest and forwarding** — :class:`ReceivedInstance`, one row per instance received
  (C-STORE or STOW-RS), which is also its forwarding outbox entry, and
  :class:`StudyProgress`, one row per original study (the hub's completion signal is its
  outbox entry);
* **the pseudonym map** — :class:`UidMap`, :class:`PatientMap`, :class:`StudyMap`;
* **results** (from the hub back into the PACS) — in :mod:`aifi.gateway.persistence.result_tables`.

Tables are prefixed ``gw_`` and registered on :class:`GatewayModel`'s own metadata; they
are never created in the hub's database.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from aifi.clock import utc_now


class GatewayModel(SQLModel, registry=registry()):
    """The base of the gateway's tables: their own registry and ``metadata``, so that they
    never join the hub's schema (``SQLModel.metadata``) in a process that imports both,
    and the gateway's Alembic migrations compare against these tables alone."""


class InstanceState(enum.StrEnum):
    """Where a received instance is (``gw_instance.state``)."""

    RECEIVED = "received"
    """On disk and committed; not yet sent to the hub (or waiting for a retry)."""
    FORWARDING = "forwarding"
    """Claimed by a forwarder (``lease_until``); an expired lease makes it due again."""
    FORWARDED = "forwarded"
    """The hub acknowledged it (STOW-RS stored or already stored)."""
    QUARANTINED = "quarantined"
    """Never sent: ``reason`` says why (burned-in annotation, not pseudonymisable)."""
    FAILED = "failed"
    """The hub refused it for good (a non-retryable STOW-RS failure): ``reason``."""


class CompletionState(enum.StrEnum):
    """The hub's completion signal for one study (``gw_study.completion``)."""

    OPEN = "open"
    """Instances may still arrive (association open, quiet time not over)."""
    DUE = "due"
    """The association ended or the quiet time passed: send once every instance received
    so far is forwarded."""
    SIGNALLED = "signalled"
    """``POST /api/v1/studies/{pseudo}/complete`` answered 2xx."""
    FAILED = "failed"


class ReceivedInstance(GatewayModel, table=True):
    """One received instance: the original Part 10 file in the gateway's store, and its
    forwarding state. Original UIDs stay here; ``pseudo_*`` are what the hub knows."""

    __tablename__ = "gw_instance"
    __table_args__ = (
        UniqueConstraint("sop_instance_uid", name="uq_gw_instance_sop"),
        Index("ix_gw_instance_due", "state", "next_attempt_at"),
        Index("ix_gw_instance_study", "study_instance_uid"),
        Index("ix_gw_instance_pseudo", "pseudo_sop_instance_uid"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    sop_instance_uid: str = Field(max_length=64)
    sop_class_uid: str = Field(max_length=64)
    study_instance_uid: str = Field(max_length=64)
    series_instance_uid: str = Field(max_length=64)
    transfer_syntax_uid: str = Field(max_length=64)
    pseudo_sop_instance_uid: str | None = Field(default=None, max_length=64)
    pseudo_study_instance_uid: str | None = Field(default=None, max_length=64)
    source: str = Field(default="", max_length=200)
    """``dimse:CALLING_AE@address`` or ``stow:client``."""
    association: str | None = Field(default=None, max_length=64)
    """The DIMSE association it came in on (its end makes the study's completion due)."""
    file: str | None = Field(default=None, max_length=500)
    """The original Part 10 file, relative to the gateway's data folder; ``None`` once
    purged."""
    size: int = 0
    sha256: str = Field(default="", max_length=64)
    state: InstanceState = Field(default=InstanceState.RECEIVED, sa_type=String(16))
    reason: str | None = Field(default=None, sa_type=Text)
    """Why it is quarantined or failed."""
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utc_now)
    lease_until: datetime | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    received_at: datetime = Field(default_factory=utc_now)
    forwarded_at: datetime | None = None
    purged_at: datetime | None = None


class StudyProgress(GatewayModel, table=True):
    """One original study seen by the gateway: its progress, and the outbox entry of the
    hub's completion signal (``POST {hub}/api/v1/studies/{pseudo}/complete``)."""

    __tablename__ = "gw_study"
    __table_args__ = (
        UniqueConstraint("study_instance_uid", name="uq_gw_study_uid"),
        Index("ix_gw_study_completion", "completion", "next_attempt_at"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    study_instance_uid: str = Field(max_length=64)
    pseudo_study_instance_uid: str | None = Field(default=None, max_length=64)
    first_received_at: datetime = Field(default_factory=utc_now)
    last_received_at: datetime = Field(default_factory=utc_now)
    completion: CompletionState = Field(default=CompletionState.OPEN, sa_type=String(16))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utc_now)
    last_error: str | None = Field(default=None, sa_type=Text)
    signalled_at: datetime | None = None


class UidMap(GatewayModel, table=True):
    """A pseudonymous UID (``2.25.…`` from a keyed HMAC of the original) and its original.

    Deterministic, so re-sending a study gives the same rows (insert-if-absent)."""

    __tablename__ = "gw_uid_map"

    pseudo: str = Field(primary_key=True, max_length=64)
    original: str = Field(max_length=64, index=True)
    created_at: datetime = Field(default_factory=utc_now)


class PatientMap(GatewayModel, table=True):
    """A patient pseudonym and the identity behind it, with the patient's date offset."""

    __tablename__ = "gw_patient"

    pseudo_id: str = Field(primary_key=True, max_length=64)
    """The Patient ID (and name) the hub and the AI products see."""
    original_id: str = Field(default="", max_length=64, index=True)
    issuer: str = Field(default="", max_length=64)
    date_offset_days: int = 0
    """Added to every date of the patient's instances (PS3.15 E.3.6, modified dates)."""
    identity_json: str = Field(default="{}", sa_type=Text)
    """The original Patient module attributes as DICOM JSON (for re-identification)."""
    created_at: datetime = Field(default_factory=utc_now)


class StudyMap(GatewayModel, table=True):
    """A pseudonymous study and the original study's identification."""

    __tablename__ = "gw_study_map"

    pseudo_study_uid: str = Field(primary_key=True, max_length=64)
    original_study_uid: str = Field(max_length=64, index=True)
    patient_pseudo_id: str = Field(default="", max_length=64)
    accession_pseudo: str = Field(default="", max_length=64)
    identity_json: str = Field(default="{}", sa_type=Text)
    """The original General Study (and Patient Study) module attributes as DICOM JSON."""
    created_at: datetime = Field(default_factory=utc_now)
