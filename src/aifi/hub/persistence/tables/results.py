"""AI results (IHE AIR): accepted result instances, refused ones, one result per routed
workitem, and notifications of them."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from aifi.clock import utc_now


class ReviewState(enum.StrEnum):
    """Where an AI result is in the review gate (``ai_result.review_state``; stored as its
    text)."""

    NOT_REQUIRED = "not-required"
    """An autonomous product's result, or a failed or cancelled one: nothing to review."""
    AWAITING_REVIEW = "awaiting-review"
    """A supervised product's result, withheld until a person accepts or rejects it."""
    ACCEPTED = "accepted"
    """Accepted by a reviewer: released."""
    REJECTED = "rejected"
    """Rejected by a reviewer (with a reason): withheld for good."""


class Outcome(enum.StrEnum):
    """What an AI result says (``ai_result.outcome``; stored as its text)."""

    POSITIVE = "positive"
    """A result instance reports a present finding."""
    NEGATIVE = "negative"
    """No present finding."""
    MEASURED = "measured"
    """Measurements only (a quantification such as a bone age): nothing to be absent."""
    FAILED = "failed"
    """No result: the performer discontinued, the Task Manager gave up, or the completion
    named no result object."""
    CANCELLED = "cancelled"
    """No result: cancelled at the requester's request."""


REPORTED_OUTCOMES = frozenset({Outcome.POSITIVE, Outcome.NEGATIVE, Outcome.MEASURED})
"""The outcomes that come with result objects (a stored outcome, read back as its text, is
found in it too)."""


class ResultInstance(SQLModel, table=True):
    """A result instance (IHE AIR: SR, SEG, GSPS, SC, KOS...) that passed the gate at the
    door (``aifi.hub.results.gate``): STOWed by the performer of ``workitem_uid`` while it was
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
    summary_json: str | None = Field(default=None, sa_type=Text)
    """The ``ResultSummary``'s findings and measurements as JSON, summarised once by the
    gate (:mod:`aifi.hub.results.summary`); None for rows stored before it kept them
    (migration 0009): readers then summarise the stored instance."""
    created_at: datetime = Field(default_factory=utc_now)


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
    created_at: datetime = Field(default_factory=utc_now)


class AiResult(SQLModel, table=True):
    """The answer of one workitem (one routed study + AI product), created in the
    transaction that ends the workitem (COMPLETED, or CANCELED with no further attempt).

    ``review_state`` (a :class:`ReviewState`): "not-required" (autonomous product, released
    at completion), "awaiting-review" (supervised), "accepted" / "rejected" (after review);
    ``outcome`` an :class:`Outcome`. ``released_at``
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
        # /metrics: results by outcome and the turnaround histogram from this index alone
        Index(
            "ix_ai_result_metrics",
            "tenant",
            "product",
            "outcome",
            "workitem_created_at",
            "completed_at",
        ),
    )

    pk: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(foreign_key="tenant.id", max_length=63)
    workitem_uid: str = Field(max_length=64)
    study_instance_uid: str = Field(default="", max_length=64)
    product: str = Field(default="", max_length=64)
    supervision: str = Field(default="supervised", max_length=16)
    outcome: str = Field(max_length=16)
    """An :class:`Outcome` (written as the member, read back as its text, which compares
    equal)."""
    urgent: bool = False
    summary: str = Field(default="", sa_type=Text)
    reason: str | None = Field(default=None, sa_type=Text)
    review_state: str = Field(max_length=16)
    """A :class:`ReviewState` (written as the member, read back as its text)."""
    reviewer: str | None = Field(default=None, max_length=200)
    review_reason: str | None = Field(default=None, sa_type=Text)
    reviewed_at: datetime | None = None
    workitem_created_at: datetime | None = None
    completed_at: datetime | None = None
    released_at: datetime | None = None
    created_at: datetime = Field(default_factory=utc_now)


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
    created_at: datetime = Field(default_factory=utc_now)
