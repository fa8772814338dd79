"""The delivery outbox: one row per released result and PACS destination."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from aifi.clock import utc_now as _now


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
