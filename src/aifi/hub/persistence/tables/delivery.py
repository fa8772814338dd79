"""The delivery outbox: one row per released result and PACS destination."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import AutoString, Field, SQLModel

from aifi.clock import utc_now


class DeliveryState(enum.StrEnum):
    """Where a delivery is (``delivery.state``; stored as its text)."""

    PENDING = "pending"
    """Waiting for ``next_attempt_at`` (a first attempt, or a retry after backoff)."""
    DELIVERING = "delivering"
    """Claimed by a hub process until ``lease_until``; an expired lease makes it due again."""
    DELIVERED = "delivered"
    """The PACS confirmed every instance of the result."""
    FAILED = "failed"
    """Given up: refused for good, or out of attempts (a user may retry it)."""


class Delivery(SQLModel, table=True):
    """The durable outbox: one row per released result and PACS destination of the tenant
    (``aifi.hub.delivery.deliverer`` works it off). An expired ``lease_until`` on a "delivering" row
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
    state: DeliveryState = Field(default=DeliveryState.PENDING, sa_type=AutoString(length=16))
    """A :class:`DeliveryState` (read back as its text, which compares equal)."""
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utc_now)
    lease_until: datetime | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    delivered_sop_uids: str = Field(default="[]", sa_type=Text)
    """JSON list of the SOP Instance UIDs the PACS confirmed so far."""
    created_at: datetime = Field(default_factory=utc_now)
    delivered_at: datetime | None = None
