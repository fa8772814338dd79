"""The Task Manager's state: each study's routing, and the lease of the one running Task Manager."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel


class StudyRouting(SQLModel, table=True):
    """Where the Task Manager stands with a study (IHE AIW-I): the study version (its
    ``updated_at``) last routed, and an explicit completion signal if one came. A study
    whose ``updated_at`` is newer than ``routed_version`` is still arriving or waiting for
    its quiet period."""

    __tablename__ = "study_routing"
    __table_args__ = (UniqueConstraint("tenant", "study_instance_uid", name="uq_study_routing"),)

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    study_instance_uid: str = Field(max_length=64)
    routed_version: datetime | None = None
    complete_requested_at: datetime | None = None
    readiness_marked_at: datetime | None = None
    """When the study's SCHEDULED workitems were last set INCOMPLETE (new instances)."""


class HubLease(SQLModel, table=True):
    """A lease held by one hub process for a singleton job (the Task Manager loop), so
    that with several worker processes exactly one routes studies and sweeps deadlines;
    another takes over when the holder stops renewing it."""

    __tablename__ = "hub_lease"

    name: str = Field(primary_key=True, max_length=63)
    holder: str = Field(max_length=128)
    expires_at: datetime
