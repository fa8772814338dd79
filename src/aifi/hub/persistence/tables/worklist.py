"""The UPS worklist (PS3.4 Annex CC, IHE AIW-I): workitems, subscriptions, events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from aifi.clock import utc_now as _now


class Workitem(SQLModel, table=True):
    """A Unified Procedure Step (PS3.4 Annex CC): one AI task on the AIW-I worklist.

    The state lives here only (a restart resumes exactly); ``attributes`` holds the whole
    UPS as DICOM JSON, the columns are what searches and the deadline sweeper filter on.
    ``transaction_uid`` is the performer's Transaction UID while IN PROGRESS and is never
    returned to clients (PS3.4 CC.1.1)."""

    __tablename__ = "workitem"
    __table_args__ = (
        UniqueConstraint("tenant", "sop_instance_uid", name="uq_workitem_uid"),
        Index("ix_workitem_state", "tenant", "procedure_step_state", "priority"),
        Index("ix_workitem_study", "tenant", "study_instance_uid"),
        Index("ix_workitem_deadline", "procedure_step_state", "deadline"),
        # /metrics counts workitems by tenant, product and state from this index alone
        Index("ix_workitem_product_state", "tenant", "product", "procedure_step_state"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    sop_instance_uid: str = Field(max_length=64)
    procedure_step_state: str = Field(max_length=16)
    transaction_uid: str | None = Field(default=None, max_length=64)
    priority: str = Field(default="MEDIUM", max_length=16)
    input_readiness_state: str = Field(default="READY", max_length=16)
    study_instance_uid: str | None = Field(default=None, max_length=64)
    """The (first) study the Input Information Sequence references."""
    workitem_code: str | None = Field(default=None, max_length=64)
    """Code Value of the Scheduled Workitem Code Sequence: the AI product and task."""
    product: str | None = Field(default=None, max_length=64)
    """The routed AI product (routing rules), when the hub requested the workitem."""
    attempt: int = 1
    deadline: datetime | None = None
    """When a SCHEDULED workitem must be claimed, or an IN PROGRESS one finished, by."""
    attributes: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class UpsSubscription(SQLModel, table=True):
    """A subscription of an AE to UPS events (PS3.4 CC.2.3): to one workitem, or to the
    global worklist (``workitem_uid`` = 1.2.840.10008.5.1.4.34.5) or a filtered one
    (1.2.840.10008.5.1.4.34.5.1, ``filter`` holding the matching keys as a query string)."""

    __tablename__ = "ups_subscription"
    __table_args__ = (
        UniqueConstraint("tenant", "ae_title", "workitem_uid", name="uq_ups_subscription"),
        Index("ix_ups_subscription_workitem", "tenant", "workitem_uid"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    ae_title: str = Field(max_length=16)
    workitem_uid: str = Field(max_length=64)
    deletion_lock: bool = False
    suspended: bool = False
    filter: str | None = Field(default=None, max_length=4000)
    created_at: datetime = Field(default_factory=_now)


class UpsEvent(SQLModel, table=True):
    """An event report waiting for (or delivered to) one subscriber AE over its WebSocket
    channel (PS3.18 §11.13 / PS3.4 CC.2.4). Kept in the database so that every hub process
    can deliver what any process produced, and a subscriber that was away gets what it
    missed."""

    __tablename__ = "ups_event"
    __table_args__ = (Index("ix_ups_event_ae", "tenant", "ae_title", "pk"),)

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    ae_title: str = Field(max_length=16)
    workitem_uid: str = Field(max_length=64)
    event_type: int
    payload: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    """The event as DICOM JSON (zlib-compressed)."""
    created_at: datetime = Field(default_factory=_now)
    delivered_at: datetime | None = None
