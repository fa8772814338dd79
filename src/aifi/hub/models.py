"""Database tables (SQLModel). Alembic migrations in ``migrations/`` create them.

Rows are never returned to clients as they are: the routers build DICOM JSON from the
stored metadata. Every table carries ``tenant``; every unique key starts with it.
The columns indexed here are the QIDO-RS required matching keys (PS3.18 §10.6.1.3).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def _now() -> datetime:
    return datetime.now(UTC)


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"

    id: str = Field(primary_key=True, max_length=63)
    name: str = Field(default="", max_length=200)
    require_deidentified: bool | None = None
    """STOW-RS accepts only instances with Patient Identity Removed (0012,0062) YES from this
    tenant's callers (:mod:`aifi.hub.deidentified`); ``None``: the hub's default
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


class ResultInstance(SQLModel, table=True):
    """A result instance (IHE AIR: SR, SEG, GSPS, SC, KOS...) that passed the gate at the
    door (``aifi.hub.results``): STOWed by the performer of ``workitem_uid`` while it was
    IN PROGRESS and conformant to the AIR profile for that workitem's inputs."""

    __tablename__ = "result_instance"
    __table_args__ = (
        UniqueConstraint("tenant", "sop_instance_uid", name="uq_result_instance_uid"),
        Index("ix_result_instance_workitem", "tenant", "workitem_uid"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    workitem_uid: str = Field(max_length=64)
    study_instance_uid: str = Field(max_length=64)
    series_instance_uid: str = Field(max_length=64)
    sop_instance_uid: str = Field(max_length=64)
    sop_class_uid: str = Field(max_length=64)
    kind: str = Field(max_length=16)
    """``ResultSummary.kind``: SR, SEG, GSPS, SC, KO, OTHER."""
    summary: str = Field(default="", max_length=4000)
    """``ResultSummary.text()``: one human line."""
    positive: bool = False
    findings: int = 0
    """Qualitative findings the instance reports (present or absent)."""
    measurements: int = 0
    """Measurements the instance reports (e.g. a bone age)."""
    created_at: datetime = Field(default_factory=_now)


class ResultProblem(SQLModel, table=True):
    """Why a result instance or a completion of ``workitem_uid`` was refused (the workitem
    records why: IHE AIR conformance at the door, Output Information Sequence at completion)."""

    __tablename__ = "result_problem"
    __table_args__ = (Index("ix_result_problem_workitem", "tenant", "workitem_uid"),)

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    workitem_uid: str = Field(max_length=64)
    sop_instance_uid: str | None = Field(default=None, max_length=64)
    problem: str = Field(sa_type=Text)
    created_at: datetime = Field(default_factory=_now)


class AiResult(SQLModel, table=True):
    """The answer of one workitem (one routed study + AI product), created in the
    transaction that ends the workitem (COMPLETED, or CANCELED with no further attempt).

    ``review_state``: "not-required" (autonomous product, released at completion),
    "awaiting-review" (supervised), "accepted" / "rejected" (after review). ``released_at``
    is when the result became final for the hospital (the outbox, ``Delivery``, starts
    there, and the released-results feed lists it): at completion for an autonomous
    product, at acceptance after review, and at once for a failed or cancelled outcome
    (nothing to review; the hospital must see that no result will come)."""

    __tablename__ = "ai_result"
    __table_args__ = (
        UniqueConstraint("tenant", "workitem_uid", name="uq_ai_result_workitem"),
        Index("ix_ai_result_created", "tenant", "created_at"),
        Index("ix_ai_result_review", "tenant", "review_state"),
        Index("ix_ai_result_study", "tenant", "study_instance_uid"),
        Index("ix_ai_result_released", "tenant", "released_at", "pk"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    workitem_uid: str = Field(max_length=64)
    study_instance_uid: str = Field(default="", max_length=64)
    product: str = Field(default="", max_length=64)
    supervision: str = Field(default="supervised", max_length=16)
    outcome: str = Field(max_length=16)
    urgent: bool = False
    summary: str = Field(default="", sa_type=Text)
    reason: str | None = Field(default=None, sa_type=Text)
    review_state: str = Field(max_length=16)
    reviewer: str | None = Field(default=None, max_length=200)
    review_reason: str | None = Field(default=None, sa_type=Text)
    reviewed_at: datetime | None = None
    workitem_created_at: datetime | None = None
    completed_at: datetime | None = None
    released_at: datetime | None = None
    created_at: datetime = Field(default_factory=_now)


class Delivery(SQLModel, table=True):
    """The durable outbox: one row per released result and PACS destination of the tenant
    (``aifi.hub.delivery`` works it off). An expired ``lease_until`` on a "delivering" row
    means the process that took it died: the row is due again."""

    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("result_pk", "destination", name="uq_delivery_destination"),
        Index("ix_delivery_due", "state", "next_attempt_at"),
        Index("ix_delivery_tenant", "tenant", "state"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    result_pk: int = Field(foreign_key="ai_result.pk")
    destination: str = Field(max_length=200)
    state: str = Field(default="pending", max_length=16)
    """pending, delivering, delivered, failed."""
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=_now)
    lease_until: datetime | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    delivered_sop_uids: str = Field(default="[]", sa_type=Text)
    """JSON list of the SOP Instance UIDs the PACS confirmed so far."""
    created_at: datetime = Field(default_factory=_now)
    delivered_at: datetime | None = None


class Notification(SQLModel, table=True):
    """An event for people (kind "urgent-finding": a positive finding of a product flagged
    urgent), read by ``GET /api/v1/notifications``."""

    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_created", "tenant", "pk"),)

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    kind: str = Field(max_length=32)
    workitem_uid: str = Field(max_length=64)
    study_instance_uid: str = Field(default="", max_length=64)
    product: str = Field(default="", max_length=64)
    text: str = Field(default="", sa_type=Text)
    created_at: datetime = Field(default_factory=_now)


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
    (``aifi.hub.fhir_projection``), so the UPS transactions of performers do not wait for
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
    state: str = Field(default="pending", max_length=16)
    """pending, sending, delivered, failed."""
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


class OAuthClient(SQLModel, table=True):
    """A registered OAuth2 client (SMART Backend Services, RFC 6749 §2): who it is (role,
    tenant, products), what it may ask for (``scopes``, space-separated) and how it proves
    itself: ``private_key_jwt`` (RFC 7523 §2.2, with ``jwks`` or an allow-listed
    ``jwks_url``) or ``client_secret_basic`` (RFC 6749 §2.3.1; only a hash is kept)."""

    __tablename__ = "oauth_client"
    __table_args__ = (UniqueConstraint("client_id", name="uq_oauth_client_id"),)

    pk: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(max_length=64)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    role: str = Field(max_length=16)
    products: str = Field(default="", max_length=2000)
    """Space-separated AI products of a performer; empty for other roles."""
    scopes: str = Field(sa_type=Text)
    """Space-separated scopes the client may be granted."""
    auth_method: str = Field(max_length=32)
    jwks: str | None = Field(default=None, sa_type=Text)
    jwks_url: str | None = Field(default=None, max_length=2000)
    secret_hash: str | None = Field(default=None, max_length=256)
    description: str = Field(default="", max_length=400)
    rate_limit_per_minute: int | None = None
    max_request_mb: int | None = None
    created_at: datetime = Field(default_factory=_now)
    rotated_at: datetime | None = None
    revoked_at: datetime | None = None


class SigningKey(SQLModel, table=True):
    """A key the built-in authorization server signs access tokens with. The newest key
    signs; older keys stay in the public JWKS until every token they signed has expired
    (key rotation)."""

    __tablename__ = "signing_key"
    __table_args__ = (UniqueConstraint("kid", name="uq_signing_key_kid"),)

    pk: int | None = Field(default=None, primary_key=True)
    kid: str = Field(max_length=64)
    alg: str = Field(max_length=16)
    private_jwk: str = Field(sa_type=Text)
    created_at: datetime = Field(default_factory=_now)
    retired_at: datetime | None = None
    """When it stopped signing (a newer key took over)."""


class OAuthJti(SQLModel, table=True):
    """The ``jti`` of every client assertion seen, until it expires: a second use of the
    same assertion is a replay and is refused (SMART Backend Services; RFC 7523 §3)."""

    __tablename__ = "oauth_jti"
    __table_args__ = (
        UniqueConstraint("client_id", "jti", name="uq_oauth_jti"),
        Index("ix_oauth_jti_expires", "expires_at"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    client_id: str = Field(max_length=64)
    jti: str = Field(max_length=256)
    expires_at: datetime


class OAuthRevoked(SQLModel, table=True):
    """An access token revoked before it expired (RFC 7009), kept until it would expire."""

    __tablename__ = "oauth_revoked"
    __table_args__ = (
        UniqueConstraint("jti", name="uq_oauth_revoked_jti"),
        Index("ix_oauth_revoked_expires", "expires_at"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    jti: str = Field(max_length=64)
    client_id: str = Field(max_length=64)
    expires_at: datetime


# --- audit (issue 6) ----------------------------------------------------------------------


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
    recorded_at: datetime = Field(default_factory=_now)
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
    updated_at: datetime = Field(default_factory=_now)
