"""The hub's FHIR R4 store: resources, search index, pending projections, subscriptions, the
notification outbox, and EPD requests."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import AutoString, Field, SQLModel

from aifi.clock import utc_now as _now


class FhirResource(SQLModel, table=True):
    """The current version of one FHIR resource (``aifi.fhir``): the hub's projection of
    its own state (Task per workitem, DiagnosticReport/Observation/Provenance per AI result,
    ImagingStudy/Patient per routed study, Device per product) and what clients created
    (Task, ServiceRequest, Subscription). ``content`` is the JSON with ``meta``;
    ``version_id`` is ``meta.versionId`` and grows by one on each change."""

    __tablename__ = "fhir_resource"
    __table_args__ = (
        UniqueConstraint("tenant", "resource_type", "resource_id", name="uq_fhir_resource"),
        Index("ix_fhir_resource_updated", "tenant", "resource_type", "last_updated"),
        Index("ix_fhir_resource_workitem", "tenant", "workitem_uid"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    resource_type: str = Field(max_length=40)
    resource_id: str = Field(max_length=64)
    version_id: int = 1
    last_updated: datetime = Field(default_factory=_now)
    workitem_uid: str | None = Field(default=None, max_length=64)
    """The UPS workitem the resource mirrors or reports on, if any."""
    content: str = Field(sa_type=Text)


class FhirSearchToken(SQLModel, table=True):
    """One search parameter value of a :class:`FhirResource` (``aifi.fhir.search``
    extracts them): tokens as ``system``/``value``, references as ``Type/id`` in ``value``,
    dates as UTC ISO 8601 text in ``value`` (text order is time order)."""

    __tablename__ = "fhir_search_token"
    __table_args__ = (
        Index("ix_fhir_search_value", "tenant", "resource_type", "param", "value"),
        Index("ix_fhir_search_resource", "resource_pk"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    resource_pk: int = Field(foreign_key="fhir_resource.pk")
    tenant: str = Field(max_length=63)
    resource_type: str = Field(max_length=40)
    param: str = Field(max_length=40)
    system: str = Field(default="", max_length=200)
    value: str = Field(default="", max_length=400)


class FhirPending(SQLModel, table=True):
    """A workitem (``kind`` "workitem", ``key`` its UID) or an EPD request (``kind``
    "request", ``key`` its Task id) whose FHIR resources must be brought in step: written
    in the transaction that changed it, worked off after the commit by the projection
    (``aifi.hub.fhir.projection``), so the UPS transactions of performers do not wait for
    the FHIR mapping."""

    __tablename__ = "fhir_pending"
    __table_args__ = (Index("ix_fhir_pending_tenant", "tenant", "pk"),)

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(max_length=63)
    kind: str = Field(max_length=16)
    key: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=_now)


class FhirSubscriptionState(SQLModel, table=True):
    """Runtime state of one FHIR Subscription (R5 Subscriptions Backport IG for R4): the
    event counter, when the next heartbeat is due, and how delivery goes."""

    __tablename__ = "fhir_subscription_state"
    __table_args__ = (
        UniqueConstraint("tenant", "subscription_id", name="uq_fhir_subscription_state"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    subscription_id: str = Field(max_length=64)
    events_since_start: int = 0
    heartbeat_seconds: int | None = None
    next_heartbeat_at: datetime | None = None
    consecutive_failures: int = 0
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=_now)


class FhirOutboxState(enum.StrEnum):
    """Where a queued FHIR message is (``fhir_outbox.state``; stored as its text)."""

    PENDING = "pending"
    """Waiting for ``next_attempt_at`` (and for the rows queued before it)."""
    SENDING = "sending"
    """Claimed by a hub process until ``lease_until``; an expired lease makes it due again."""
    DELIVERED = "delivered"
    """The receiver accepted it."""
    FAILED = "failed"
    """Given up: refused for good, or out of attempts."""


class FhirOutbox(SQLModel, table=True):
    """A FHIR message waiting to go out (durable, retried with backoff): a subscription
    notification (``channel`` "subscription": handshake, heartbeat or event-notification)
    or a push of a DiagnosticReport with its Observations to the tenant's EPD (``channel``
    "epd-push")."""

    __tablename__ = "fhir_outbox"
    __table_args__ = (
        Index("ix_fhir_outbox_due", "state", "next_attempt_at"),
        Index("ix_fhir_outbox_subscription", "tenant", "subscription_id", "pk"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    channel: str = Field(max_length=16)
    subscription_id: str | None = Field(default=None, max_length=64)
    kind: str = Field(max_length=24)
    """handshake, heartbeat, event-notification (subscriptions) or push (EPD)."""
    event_number: int | None = None
    focus_type: str | None = Field(default=None, max_length=40)
    focus_id: str | None = Field(default=None, max_length=64)
    focus_version: int | None = None
    state: FhirOutboxState = Field(default=FhirOutboxState.PENDING, sa_type=AutoString(length=16))
    """A :class:`FhirOutboxState` (read back as its text, which compares equal)."""
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=_now)
    lease_until: datetime | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=_now)
    delivered_at: datetime | None = None


class AiRequest(SQLModel, table=True):
    """An EPD's request for AI: a FHIR Task it created naming a study (Study Instance UID
    or Accession Number) and a product. "waiting" until the study is there and routed,
    then "linked" to the UPS workitem that does the work, or "failed" with the reason."""

    __tablename__ = "ai_request"
    __table_args__ = (
        UniqueConstraint("tenant", "task_id", name="uq_ai_request_task"),
        Index("ix_ai_request_state", "state", "tenant"),
        Index("ix_ai_request_workitem", "tenant", "workitem_uid"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    task_id: str = Field(max_length=64)
    product: str = Field(max_length=64)
    study_instance_uid: str | None = Field(default=None, max_length=64)
    accession_number: str | None = Field(default=None, max_length=64)
    state: str = Field(default="waiting", max_length=16)
    workitem_uid: str | None = Field(default=None, max_length=64)
    reason: str | None = Field(default=None, sa_type=Text)
    deadline: datetime | None = None
    """A request whose study has not arrived by then fails."""
    created_at: datetime = Field(default_factory=_now)


# --- OAuth2 (issue 6, aifi.hub.auth) -------------------------------------------------------
