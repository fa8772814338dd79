"""Prior-study requests (issue 17, :mod:`aifi.hub.priors`): what a workitem of a comparison
product waits for, and the studies the hospital's gateway registered as its priors."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class PriorRequest(SQLModel, table=True):
    """One workitem's request for the patient's earlier studies (routing rules ``priors``).
    ``state`` is a :class:`aifi.hub.priors.service.PriorRequestState` value: ``open`` until
    the gateway answers (``found``/``none``/``failed``) or the ``deadline`` passes
    (``expired``); the workitem is READY after any of those."""

    __tablename__ = "prior_request"
    __table_args__ = (
        UniqueConstraint("tenant", "request_id", name="uq_prior_request_id"),
        Index("ix_prior_request_open", "state", "deadline"),
        Index("ix_prior_request_workitem", "tenant", "workitem_uid"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    request_id: str = Field(max_length=64)
    workitem_uid: str = Field(max_length=64)
    study_instance_uid: str = Field(max_length=64)
    patient_id: str = Field(default="", max_length=64)
    product: str = Field(max_length=64)
    count: int = 1
    same_modality: bool = True
    same_body_part: bool = True
    within_days: int = 1825
    modalities: str = Field(default="", max_length=200)
    """The current study's modalities, ``|``-separated."""
    body_parts: str = Field(default="", max_length=400)
    """The current study's canonical body regions, ``|``-separated."""
    state: str = Field(default="open", max_length=16)
    reason: str | None = Field(default=None, sa_type=Text)
    deadline: datetime
    created_at: datetime
    answered_at: datetime | None = None


class PriorStudy(SQLModel, table=True):
    """A study the gateway registered as a prior of a request: the Task Manager never
    routes it (it is input to another study's workitem, not a new examination)."""

    __tablename__ = "prior_study"
    __table_args__ = (
        UniqueConstraint("tenant", "study_instance_uid", "request_pk", name="uq_prior_study"),
        Index("ix_prior_study_uid", "tenant", "study_instance_uid"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(max_length=63)
    request_pk: int = Field(foreign_key="prior_request.pk")
    study_instance_uid: str = Field(max_length=64)
