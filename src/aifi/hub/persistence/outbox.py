"""The one durable outbox engine: PACS deliveries (:mod:`aifi.hub.delivery.deliverer`), FHIR
notifications and EPD pushes (:mod:`aifi.hub.fhir.notify`) and the gateway's forwarding to
the hub (:mod:`aifi.gateway.forward.forwarder`) are each a table whose rows are worked off
the same way; each user plugs in only what is its own (which rows, how to send one, how to
describe a failure).

**The row.** Every outbox table has the columns of :class:`OutboxRow`: a ``state`` (one of
the four of :class:`OutboxStates`: due, working, done, failed — each table spells them its
own way), ``attempts``, ``next_attempt_at``, ``lease_until`` and ``last_error``. A row is
written in the *same* transaction as what it reports (nothing is lost by a restart), and
:meth:`Outbox.ring_after_commit` wakes this process's loop once that commits.

**Claim** (:meth:`Outbox.claim`), in one short write transaction: the rows that are due —
``due`` with ``next_attempt_at`` reached, or ``working`` with an expired lease (the process
that held it died) — become ``working``, ``attempts + 1``, ``lease_until = now + lease``.
PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED``, so concurrent processes take different
rows; SQLite: write transactions are serialised (``BEGIN IMMEDIATE``) and the second process
sees the rows already taken. The claim's fencing token is (attempt, lease end): a later
write checks it under a row lock (:meth:`Outbox.lock`, :meth:`Outbox.owns`) and leaves a
row another process took over alone.

**Send**, outside any transaction: the user's own.

**Record** (:meth:`Outbox.settle`), if the row is still this process's: success → done;
a transient failure → due again after exponential backoff (:func:`retry_delay`:
``backoff_seconds · 2^(attempts-1)``, at most ``max_backoff_seconds``) with ``last_error``;
a permanent failure, or the ``max_attempts``-th → failed. How ``last_error`` reads is the
user's :class:`Wording`.

**Wake-up** (:func:`run_outbox_loop`): one round in a worker thread every ``poll_seconds``,
at once when this process queued something (the worker's doorbell rings after the commit),
and again at once after a full batch, until cancelled. Rows queued by other processes wait
for the poll; an error in one round is logged and the loop goes on.

Times are passed in (``now``): the users hold the injected clock (:mod:`aifi.clock`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

import anyio.to_thread
from sqlalchemy import ColumnElement, and_, event, or_
from sqlmodel import Session, col, select

from aifi.clock import as_utc
from aifi.dicomweb.worklist import Doorbell
from aifi.hub.persistence.database import Database

log = logging.getLogger(__name__)


class OutboxRow(Protocol):
    """The columns every outbox table has."""

    pk: int | None
    state: Any
    """One of the table's :class:`OutboxStates` (a ``StrEnum`` member, or its text as read)."""
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None
    last_error: str | None


R = TypeVar("R", bound=OutboxRow)
C = TypeVar("C")
T = TypeVar("T")


@dataclass(frozen=True)
class OutboxStates:
    """How one outbox table spells the four states of its rows."""

    due: str
    """Waiting for ``next_attempt_at`` (e.g. ``pending``)."""
    working: str
    """Claimed by a process until ``lease_until`` (e.g. ``delivering``)."""
    done: str
    """Sent (e.g. ``delivered``)."""
    failed: str
    """Given up: refused for good, or out of attempts."""


@dataclass(frozen=True)
class Failure:
    """Why an attempt did not get through: ``error`` as ``last_error`` starts, and whether
    a later attempt may succeed."""

    error: str
    retryable: bool


@dataclass(frozen=True)
class Wording:
    """How ``last_error`` reads after a failed attempt: templates over ``error`` (the
    :class:`Failure`'s text), ``attempts`` (the row's, this one included) and ``at`` (when
    the retry is due, ISO 8601 to ``timespec``)."""

    refused: str = "{error}; refused, not retried"
    gave_up: str = "{error}; gave up after {attempts} attempts"
    retry: str = "{error}; retry at {at}"
    timespec: str = "seconds"


def retry_delay(attempts: int, first_seconds: float, cap_seconds: float) -> float:
    """Exponential backoff of an outbox row after its ``attempts``-th failed attempt:
    ``first_seconds`` doubled per attempt, at most ``cap_seconds``."""
    return float(min(cap_seconds, first_seconds * 2 ** (attempts - 1)))


class Outbox(Generic[R]):
    """Claim, fence and record the rows of one outbox table (module docstring); one per
    worker, any number of processes over one database."""

    def __init__(
        self,
        db: Database,
        table: type[R],
        states: OutboxStates,
        *,
        lease_seconds: float,
        backoff_seconds: float,
        max_backoff_seconds: float,
        max_attempts: int | None,
        error_chars: int | None = None,
        wording: Wording = Wording(),
        doorbell: Doorbell | None = None,
    ) -> None:
        self.db = db
        self.table = table
        self.states = states
        self.lease_seconds = lease_seconds
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.max_attempts = max_attempts
        """None: a transient failure is retried for ever."""
        self.error_chars = error_chars
        """``last_error`` is cut to this many characters (None: not cut)."""
        self.wording = wording
        self.doorbell = doorbell if doorbell is not None else Doorbell()
        """Rung after a transaction that queued rows commits (:func:`run_outbox_loop`)."""
        self._bell_key = ("outbox-bell", id(self))

    # -- wake-up ------------------------------------------------------------------------------

    def ring_after_commit(self, session: Session) -> None:
        """Ring :attr:`doorbell` once ``session``'s transaction (which queued rows) commits."""
        if not session.info.get(self._bell_key):
            session.info[self._bell_key] = True
            event.listen(session, "after_commit", self._ring, once=True)

    def _ring(self, session: Session) -> None:
        session.info.pop(self._bell_key, None)
        self.doorbell.ring()

    # -- claim --------------------------------------------------------------------------------

    def lease_end(self, now: datetime) -> datetime:
        """When a lease taken (or renewed) at ``now`` ends."""
        return now + timedelta(seconds=self.lease_seconds)

    def due(self, now: datetime) -> ColumnElement[bool]:
        """Rows due at ``now``: waiting and their time reached, or working with an expired
        lease."""
        table = self.table
        return or_(
            and_(col(table.state) == self.states.due, col(table.next_attempt_at) <= now),
            and_(col(table.state) == self.states.working, col(table.lease_until) < now),
        )

    def claim(
        self,
        now: datetime,
        make: Callable[[R, datetime], C],
        *,
        limit: int,
        where: Iterable[ColumnElement[bool]] = (),
        order_by: Sequence[Any] | None = None,
        take: Callable[[R], bool] | None = None,
        taken_over: Callable[[R], None] | None = None,
    ) -> list[C]:
        """Claim at most ``limit`` due rows (also matching ``where``; oldest
        ``next_attempt_at`` first unless ``order_by``); ``make(row, lease_until)`` turns each
        into the caller's claim, in the claiming transaction. ``take(row)`` False stops
        before that row (e.g. a size budget); ``taken_over(row)`` is told about a row whose
        lease expired."""
        table = self.table
        lease_until = self.lease_end(now)
        order = order_by if order_by is not None else (col(table.next_attempt_at), col(table.pk))
        stmt = select(table).where(self.due(now), *where).order_by(*order).limit(limit)
        if not self.db.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        claims: list[C] = []
        with self.db.write() as session:
            for row in session.exec(stmt).all():
                assert row.pk is not None
                if take is not None and not take(row):
                    break
                if row.state == self.states.working and taken_over is not None:
                    taken_over(row)
                row.state = self.states.working
                row.attempts += 1
                row.lease_until = lease_until
                claims.append(make(row, lease_until))
        return claims

    # -- fencing ------------------------------------------------------------------------------

    def lock(self, session: Session, pk: int) -> R | None:
        """Row ``pk``, locked for this transaction (PostgreSQL ``FOR UPDATE``; SQLite's
        write transaction is the lock)."""
        return session.get(self.table, pk, with_for_update=not self.db.is_sqlite)

    def lock_all(self, session: Session, pks: Iterable[int]) -> list[R]:
        """The rows ``pks`` (those that exist), locked as by :meth:`lock`."""
        stmt = select(self.table).where(col(self.table.pk).in_(list(pks)))
        if not self.db.is_sqlite:
            stmt = stmt.with_for_update()
        return list(session.exec(stmt).all())

    def owns(self, row: R, attempt: int, lease_until: datetime | None = None) -> bool:
        """Is ``row`` still the claim with this fencing token: working, the same attempt and
        (when given) the same lease end?"""
        if row.state != self.states.working or row.attempts != attempt:
            return False
        if lease_until is None:
            return True
        return row.lease_until is not None and as_utc(row.lease_until) == lease_until

    # -- record -------------------------------------------------------------------------------

    def settle(self, row: R, now: datetime, failure: Failure | None) -> None:
        """Record an attempt on a row this process owns: done (``failure`` None); failed
        when not retryable or out of attempts; else due again after the backoff. The lease
        is given up; the caller sets its own columns (e.g. when it was delivered)."""
        row.lease_until = None
        if failure is None:
            row.state = self.states.done
            row.last_error = None
            return
        wording = self.wording
        if not failure.retryable:
            row.state = self.states.failed
            text = wording.refused.format(error=failure.error, attempts=row.attempts, at="")
        elif self.max_attempts is not None and row.attempts >= self.max_attempts:
            row.state = self.states.failed
            text = wording.gave_up.format(error=failure.error, attempts=row.attempts, at="")
        else:
            delay = retry_delay(row.attempts, self.backoff_seconds, self.max_backoff_seconds)
            row.state = self.states.due
            row.next_attempt_at = now + timedelta(seconds=delay)
            at = row.next_attempt_at.isoformat(timespec=wording.timespec)
            text = wording.retry.format(error=failure.error, attempts=row.attempts, at=at)
        row.last_error = text[: self.error_chars] if self.error_chars is not None else text

    def give_back(self, row: R, until: datetime, reason: str) -> None:
        """Give a claimed row back untried, its attempt not counted, due at ``until``, with
        ``reason`` as ``last_error``."""
        row.state = self.states.due
        row.attempts -= 1
        row.lease_until = None
        row.next_attempt_at = until
        row.last_error = reason[: self.error_chars] if self.error_chars is not None else reason

    def requeue(self, row: R, now: datetime) -> bool:
        """Make a failed (with fresh attempts) or waiting row due at ``now``; False (nothing
        done) when it is being worked on or done."""
        if row.state not in (self.states.failed, self.states.due):
            return False
        if row.state == self.states.failed:
            row.attempts = 0
        row.state = self.states.due
        row.next_attempt_at = now
        row.lease_until = None
        return True


def run_each(
    work: Callable[[T], None], items: Sequence[T], *, workers: int, thread_name: str = ""
) -> None:
    """``work`` on each of ``items``: in this thread when there is one, else in at most
    ``workers`` threads; the first exception is raised once all are done."""
    if len(items) == 1:
        work(items[0])
    elif items:
        with ThreadPoolExecutor(min(workers, len(items)), thread_name) as pool:
            for future in [pool.submit(work, item) for item in items]:
                future.result()


class OutboxWorker(Protocol):
    doorbell: Doorbell
    batch_size: int

    def tick(self) -> int:
        """One round; returns how many rows it worked on."""
        ...


async def run_outbox_loop(worker: OutboxWorker, poll_seconds: float, name: str) -> None:
    """Run ``worker``'s rounds until cancelled (module docstring, "Wake-up").

    Each round runs in a worker thread through anyio, which, unlike ``asyncio.to_thread``,
    does not abandon the thread when the loop is cancelled: cancelling waits for the round
    under way, so an app's shutdown never disposes the database under a round's open
    connection (which would leak it: psycopg's "deleted while still open")."""
    with worker.doorbell.listen() as bell:
        while True:
            bell.clear()  # before looking: a ring during the round is not lost
            worked = 0
            try:
                worked = await anyio.to_thread.run_sync(worker.tick)
            except Exception:
                log.exception("%s round failed", name)
            if worked >= worker.batch_size:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(bell.wait(), poll_seconds)


__all__ = [
    "Failure",
    "Outbox",
    "OutboxRow",
    "OutboxStates",
    "OutboxWorker",
    "Wording",
    "retry_delay",
    "run_each",
    "run_outbox_loop",
]
