"""The gateway's results tables: the hub's released-results feed (its cursor), one row per
AI result of a study this gateway sent, the re-identified files, and the PACS outbox.

The way back of issue 15 (points 6 and 7)::

    hub feed ──poll──▶ gw_result (pending) ──fetch, re-identify──▶ gw_result_instance
                         │                                            (files in results/)
                         ├─▶ refused (a pseudonym would remain; reason) │
                         └─▶ failed (the hub refused for good)          ▼
                                                         gw_result_delivery (one per PACS)

Enum columns hold the enum's string value (as in :mod:`aifi.gateway.persistence.tables`).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlmodel import Field

from aifi.clock import utc_now
from aifi.gateway.persistence.tables import GatewayModel


class ResultState(enum.StrEnum):
    """Where one released AI result is at the gateway (``gw_result.state``)."""

    PENDING = "pending"
    """Known from the feed; its objects are still to be fetched and re-identified (or, for
    a failed/cancelled request, the not-performed report to be written); retried with
    backoff while the hub cannot be reached (``next_attempt_at``)."""
    STORED = "stored"
    """Re-identified files written under ``results/`` and their PACS deliveries queued
    (none when no PACS is configured: the files stay where they are)."""
    REFUSED = "refused"
    """Not delivered: it could not be re-identified (``reason``), PS3.15 E.1.2."""
    FAILED = "failed"
    """The hub refused to hand it over for good (e.g. 404 for an instance): ``reason``."""


class DeliveryState(enum.StrEnum):
    """One result's delivery to one PACS (``gw_result_delivery.state``); the semantics of
    the hub's delivery outbox (:mod:`aifi.hub.delivery.deliverer`)."""

    PENDING = "pending"
    DELIVERING = "delivering"
    """Claimed (``lease_until``); an expired lease makes it due again."""
    DELIVERED = "delivered"
    """Every instance confirmed by the PACS."""
    FAILED = "failed"
    """Refused for good, or out of attempts: ``last_error`` has the PACS's reason."""


class ResultFeed(GatewayModel, table=True):
    """The position in the hub's released-results feed (one row per hub): the next poll
    continues after ``cursor``, also after a restart."""

    __tablename__ = "gw_result_feed"

    name: str = Field(primary_key=True, max_length=64)
    cursor: str = Field(default="", max_length=200)
    """The feed's opaque ``next_cursor`` of the last page whose results are committed."""
    attempts: int = 0
    """Failed polls in a row (for the backoff); 0 after a good one."""
    next_poll_at: datetime = Field(default_factory=utc_now)
    last_error: str | None = Field(default=None, sa_type=Text)
    polled_at: datetime | None = None


class GatewayResult(GatewayModel, table=True):
    """One released AI result of a study this gateway pseudonymised."""

    __tablename__ = "gw_result"
    __table_args__ = (
        UniqueConstraint("workitem_uid", name="uq_gw_result_workitem"),
        Index("ix_gw_result_due", "state", "next_attempt_at"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    workitem_uid: str = Field(max_length=64)
    pseudo_study_uid: str = Field(max_length=64)
    """The study as the hub knows it."""
    study_instance_uid: str = Field(max_length=64)
    """The original study (from the pseudonym map)."""
    product: str = Field(default="", max_length=64)
    outcome: str = Field(max_length=16)
    """positive, negative, measured, failed, cancelled (the hub's word, kept as given)."""
    hub_reason: str | None = Field(default=None, sa_type=Text)
    """Why the request failed or was cancelled, as the hub said."""
    released_at: datetime | None = None
    state: ResultState = Field(default=ResultState.PENDING, sa_type=String(16))
    reason: str | None = Field(default=None, sa_type=Text)
    """Why it is refused or failed."""
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utc_now)
    last_error: str | None = Field(default=None, sa_type=Text)
    received_at: datetime = Field(default_factory=utc_now)
    stored_at: datetime | None = None


class ResultFile(GatewayModel, table=True):
    """One re-identified (or gateway-authored) instance written under ``results/``."""

    __tablename__ = "gw_result_instance"
    __table_args__ = (
        UniqueConstraint("result_pk", "sop_instance_uid", name="uq_gw_result_instance"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    result_pk: int = Field(foreign_key="gw_result.pk", index=True)
    sop_instance_uid: str = Field(max_length=64)
    """As delivered (original UIDs after re-identification)."""
    sop_class_uid: str = Field(max_length=64)
    study_instance_uid: str = Field(max_length=64)
    series_instance_uid: str = Field(max_length=64)
    transfer_syntax_uid: str = Field(max_length=64)
    pseudo_sop_instance_uid: str | None = Field(default=None, max_length=64)
    """The hub's UID of it (None for the gateway's own not-performed report)."""
    file: str = Field(max_length=500)
    """Relative to the gateway's data folder."""
    size: int = 0
    sha256: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utc_now)
    purged_at: datetime | None = None
    """When the file was deleted (every PACS had confirmed it and the retention had passed:
    :mod:`aifi.gateway.results.purge`); the row stays as the record of what was delivered."""


class ResultDelivery(GatewayModel, table=True):
    """The PACS outbox: one row per result and configured PACS destination."""

    __tablename__ = "gw_result_delivery"
    __table_args__ = (
        UniqueConstraint("result_pk", "destination", name="uq_gw_result_delivery"),
        Index("ix_gw_result_delivery_due", "state", "next_attempt_at"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    result_pk: int = Field(foreign_key="gw_result.pk")
    destination: str = Field(max_length=64)
    state: DeliveryState = Field(default=DeliveryState.PENDING, sa_type=String(16))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utc_now)
    lease_until: datetime | None = None
    delivered_sop_uids: str = Field(default="[]", sa_type=Text)
    """JSON list of the SOP Instance UIDs the PACS confirmed."""
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utc_now)
    delivered_at: datetime | None = None
