"""The gateway's FHIR relay tables (issue 17): the EPD's Subscriptions held at the gateway,
the position of each query the gateway follows at the hub, and two outboxes — notifications
to the EPD's rest-hook endpoints and the push of final reports to the EPD::

    hub /fhir ──poll (cursor: gw_fhir_follow)──▶ gw_fhir_notification ──▶ EPD rest-hook
                                              └──▶ gw_epd_push ──────────▶ EPD /fhir (transaction)
    EPD ──/fhir Subscription CRUD──▶ gw_fhir_subscription

A follow's cursor and the outbox rows it produced are written in one transaction, so a
restart neither loses nor repeats a change. The outbox rows hold what the hub holds
(pseudonymised); re-identification happens when a row is sent. Enum columns hold the enum's
string value (as in :mod:`aifi.gateway.persistence.tables`).
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlmodel import Field

from aifi.clock import utc_now
from aifi.gateway.persistence.tables import GatewayModel


class RelayState(enum.StrEnum):
    """One outbox row of the relay (``gw_fhir_notification.state``, ``gw_epd_push.state``);
    the four states of :class:`aifi.hub.persistence.outbox.OutboxStates`."""

    PENDING = "pending"
    SENDING = "sending"
    """Claimed (``lease_until``); an expired lease makes it due again."""
    DELIVERED = "delivered"
    FAILED = "failed"
    """Refused for good, or out of attempts: ``last_error`` says why."""


class FhirFollow(GatewayModel, table=True):
    """The position in one query the gateway follows at the hub (``name``: the EPD push or
    one Subscription): the next poll asks ``_lastUpdated=ge<cursor>``, also after a
    restart."""

    __tablename__ = "gw_fhir_follow"

    name: str = Field(primary_key=True, max_length=100)
    cursor: str = Field(max_length=40)
    """``meta.lastUpdated`` of the newest change taken (hub time, as the hub wrote it)."""
    boundary: str = Field(default="[]", sa_type=Text)
    """JSON list of ``Type/id/versionId`` taken in the cursor's second: the hub's ``ge``
    matches whole seconds, so those come again and are skipped (de-duplication)."""
    attempts: int = 0
    """Failed polls in a row (backoff); 0 after a good one."""
    next_poll_at: datetime = Field(default_factory=utc_now)
    last_error: str | None = Field(default=None, sa_type=Text)
    polled_at: datetime | None = None


class RelayedSubscription(GatewayModel, table=True):
    """A Subscription the EPD made at the gateway's ``/fhir`` (R5 Backport IG for R4)."""

    __tablename__ = "gw_fhir_subscription"

    id: str = Field(primary_key=True, max_length=64)
    tenant: str = Field(max_length=64)
    content: str = Field(sa_type=Text)
    """The resource as the EPD reads it (JSON, without ``meta``): its criteria with the
    hospital's identifiers, the ``status`` and ``error`` the gateway keeps."""
    version_id: int = 1
    last_updated: datetime = Field(default_factory=utc_now)
    events_since_start: int = 0
    handshake_done: bool = False
    heartbeat_seconds: int | None = None
    next_heartbeat_at: datetime | None = None
    endpoint_error: str | None = Field(default=None, sa_type=Text)
    """Why the last notification did not reach the EPD's endpoint (None: it did)."""
    hub_error: str | None = Field(default=None, sa_type=Text)
    """Why the last poll of the hub failed (None: it answered)."""


class SubscriptionNotification(GatewayModel, table=True):
    """One notification to send to a Subscription's endpoint: a handshake, a heartbeat or
    one event (its number counts per subscription, from 1, without gaps)."""

    __tablename__ = "gw_fhir_notification"
    __table_args__ = (
        Index("ix_gw_fhir_notification_due", "state", "next_attempt_at"),
        Index("ix_gw_fhir_notification_subscription", "subscription_id", "state"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    subscription_id: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    """``handshake`` | ``heartbeat`` | ``event-notification``."""
    event_number: int | None = None
    focus: str | None = Field(default=None, sa_type=Text)
    """The event's resource as the hub holds it (JSON, pseudonymised)."""
    state: RelayState = Field(default=RelayState.PENDING, sa_type=String(16))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utc_now)
    lease_until: datetime | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utc_now)
    delivered_at: datetime | None = None


class EpdPushRow(GatewayModel, table=True):
    """One final DiagnosticReport to push to the EPD (once per report)."""

    __tablename__ = "gw_epd_push"
    __table_args__ = (
        UniqueConstraint("report_id", name="uq_gw_epd_push_report"),
        Index("ix_gw_epd_push_due", "state", "next_attempt_at"),
    )

    pk: int | None = Field(default=None, primary_key=True)
    report_id: str = Field(max_length=64)
    """The hub's DiagnosticReport id (read again at send time)."""
    version_id: str = Field(default="", max_length=16)
    state: RelayState = Field(default=RelayState.PENDING, sa_type=String(16))
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utc_now)
    lease_until: datetime | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utc_now)
    delivered_at: datetime | None = None


__all__ = [
    "EpdPushRow",
    "FhirFollow",
    "RelayState",
    "RelayedSubscription",
    "SubscriptionNotification",
]
