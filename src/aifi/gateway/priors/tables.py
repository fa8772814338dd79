"""The gateway's own record of the hub's prior requests it works (``gw_prior_request``, on
:class:`~aifi.gateway.persistence.tables.GatewayModel`; migration ``0006``).

One row per request the gateway has seen at ``GET {hub}/api/v1/prior-requests``: what the
hub asked, where the work stands (:class:`PriorState`), the original UIDs of the prior
studies found (they stay in the hospital: the hub only ever hears their pseudonyms), the
outcome to answer and the retries. The row is also the answer's outbox entry: an answer
the hub did not accept (down, 5xx) is sent again after a back-off.
"""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlmodel import Field

from aifi.clock import utc_now
from aifi.gateway.persistence.tables import GatewayModel


class PriorState(enum.StrEnum):
    """Where a prior request is (``gw_prior_request.state``)."""

    NEW = "new"
    """Seen at the hub; the PACS not asked yet, or asked again after a transient error."""
    FORWARDING = "forwarding"
    """The priors are registered at the hub and retrieved into the ingest; waiting until
    the forwarder has delivered them to the hub."""
    ANSWERING = "answering"
    """``outcome`` decided; the answer is sent (again, after a transient failure)."""
    ANSWERED = "answered"
    """The hub accepted the answer."""
    EXPIRED = "expired"
    """The hub closed the request (409: its deadline passed, the workitem went ahead
    without priors) or no longer knows it (404)."""


class PriorOutcome(enum.StrEnum):
    """The answer's ``outcome`` (the hub's contract)."""

    FOUND = "found"
    NONE = "none"
    FAILED = "failed"


class PriorWork(GatewayModel, table=True):
    """One prior request of the hub and the gateway's work on it."""

    __tablename__ = "gw_prior_request"
    __table_args__ = (Index("ix_gw_prior_request_due", "state", "next_attempt_at"),)

    request_id: str = Field(primary_key=True, max_length=64)
    """The hub's id of the request."""
    pseudo_study_uid: str = Field(max_length=64)
    """The current study as the hub knows it."""
    product: str = Field(default="", max_length=64)
    request_json: str = Field(default="{}", sa_type=Text)
    """The request as the hub listed it (count, same_modality, ... deadline)."""
    state: PriorState = Field(default=PriorState.NEW, sa_type=String(16))
    outcome: PriorOutcome | None = Field(default=None, sa_type=String(16))
    reason: str | None = Field(default=None, sa_type=Text)
    """Why there is no prior (none/failed), as told to the hub."""
    prior_studies_json: str = Field(default="[]", sa_type=Text)
    """The original Study Instance UIDs of the priors retrieved (newest first)."""
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utc_now)
    last_error: str | None = Field(default=None, sa_type=Text)
    deadline: datetime | None = None
    seen_at: datetime = Field(default_factory=utc_now)
    retrieved_at: datetime | None = None
    retrieve_seconds: float | None = None
    """The PACS's own retrieve time (WADO-RS request or C-MOVE/C-GET association)."""
    answered_at: datetime | None = None
