"""Releasing an AI result: the moment it becomes final for the hospital.

A result with result objects is released at completion when its product is autonomous
(:class:`~aifi.hub.results.completion.ResultsHook`), and when a reviewer accepts it when the
product is supervised (``POST /api/v1/results/{uid}/accept``). Both go through
:func:`release`: ``released_at`` is set and the deliveries to the tenant's PACS destinations
are queued (:meth:`aifi.hub.delivery.deliverer.Deliverer.enqueue`) in the same transaction,
so a crash never leaves a released result without its outbox rows. (A failed or cancelled
result is final as it is created, with nothing to review or deliver.)

The released-results feed pages by ``released_at``, so the transactions that release commit
in that order: call :func:`serialize_releases` before reading the clock for the moment.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import text
from sqlmodel import Session

from aifi.hub.persistence.tables import AiResult

if TYPE_CHECKING:
    from aifi.hub.persistence.tables import Delivery

RELEASE_LOCK = 0x41494649_52454C
"""PostgreSQL advisory lock key that orders the transactions releasing results."""


class Enqueuer(Protocol):
    """What releasing needs of :class:`aifi.hub.delivery.deliverer.Deliverer`."""

    def enqueue(self, session: Session, result: AiResult) -> list[Delivery]: ...


def serialize_releases(session: Session) -> None:
    """Make the transactions that release results commit in the order of their
    ``released_at`` (call before reading the clock): the released-results feed pages by
    ``released_at``, and a release committed after a later one would be skipped. SQLite has
    one writer at a time already; PostgreSQL takes a transaction-level advisory lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.connection().execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": RELEASE_LOCK}
        )


def release(session: Session, result: AiResult, at: datetime, deliverer: Enqueuer | None) -> None:
    """Release ``result`` at ``at`` and queue its deliveries, in the caller's transaction
    (``session``, which :func:`serialize_releases` ordered before ``at`` was read).
    ``deliverer`` None: nothing is queued (a hub built without the outbox)."""
    result.released_at = at
    session.add(result)
    session.flush()
    if deliverer is not None:
        deliverer.enqueue(session, result)
