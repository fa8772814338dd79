"""Delivery of released AI results to each hospital's PACS: a durable outbox.

IHE RAD TF AIR: the hub stores the result instances (SR, SEG, GSPS, SC, KOS; PS3.3
A.35.13 / C.17) in the inputs' study; here they are sent on to the PACS destinations of
the tenant (:mod:`aifi.hub.delivery.destinations`: STOW-RS, PS3.18 §10.5, or C-STORE, PS3.4
Annex B).

**The outbox.** When a result is released (autonomous: at completion; supervised: when a
reviewer accepts it), :meth:`Deliverer.enqueue` adds one ``Delivery`` row per destination
of the tenant in the *same* transaction that releases it, so a released result always has
its deliveries and nothing is lost by a restart. A tenant without destinations gets none
(its results stay in the hub's own store); a result without instances (e.g. a cancelled
workitem) has nothing to deliver and gets none either.

**Working it off.** :meth:`Deliverer.tick` (run every few seconds by
:func:`run_delivery_loop`, in every hub process) works the rows with the outbox engine
(:class:`aifi.hub.persistence.outbox.Outbox`), per due row:

1. *claim* it in one short write transaction: state ``delivering``, ``attempts + 1`` and
   ``lease_until = now + lease_seconds``. Due means ``pending`` with ``next_attempt_at``
   reached, or ``delivering`` with an expired lease (the process that held it died).
   PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED``, so concurrent processes take different
   rows; SQLite: write transactions are serialised (``BEGIN IMMEDIATE``), and the second
   process sees the row already ``delivering``.
2. *send*, outside any database transaction, the result's instances the PACS has not yet
   confirmed (``delivered_sop_uids``), files from the hub's store, in chunks
   (:mod:`aifi.hub.delivery.attempt`); after each chunk the confirmations are recorded and
   the lease renewed.
3. *record* the outcome in another short transaction, if the row is still this
   process's (same attempt, same lease): ``delivered`` when every instance of the result is
   confirmed — never before, a partial delivery stays ``pending`` — else ``pending`` again
   with exponential backoff (``backoff_seconds · 2^(attempts-1)``, at most
   ``max_backoff_seconds``) and ``last_error``; ``failed`` after ``max_attempts``, or at
   once when every instance still missing was refused for good (a non-retryable status).
   :meth:`Deliverer.retry` puts a failed row back to ``pending`` with fresh attempts.

Each destination's rows are worked in their own thread, so a slow PACS does not hold up
another hospital's. When an attempt reaches nothing (no instance confirmed, every failure
retryable: the PACS is down or busy), the destination's other rows of that round are given
back untried, due when the failed one is, without using an attempt (``last_error`` says
they are waiting and why), and so are its rows of the following rounds until then: a PACS
that times out costs one timeout per backoff step, however many results wait for it, and a
long outage does not use up the attempts of every waiting result. A row held past half its
lease before its turn comes has the lease renewed first.

``last_error`` names the destination, the instances and the PACS's own reason (the STOW-RS
Failure Reason / HTTP status, or the C-STORE status, as :mod:`aifi.hub.delivery.destinations`
reports it), e.g. ``attempt 3 to 'pacs-main': 1.2.3 (Comprehensive 3D SR Storage):
HTTP 503 Service Unavailable; retry at 2026-…``.

**Delivered once.** An instance the PACS confirmed is recorded before the row is given up
and is never sent again for that delivery. The one gap is a crash (or a lost lease) between
the PACS's confirmation and the commit that records it: that instance is sent again, with
the *same* SOP Instance UID, which a PACS treats as the same instance (PS3.4 B.4.1: a
C-STORE of a known SOP Instance UID; STOW-RS answers it as already stored, PS3.18 §10.5.3).
Delivery is thus at-least-once on the wire with idempotent UIDs, and exactly-once as the
PACS's archive sees it. The lease should exceed the longest send of one chunk (the
destination's timeout), else a slow send can be taken over and repeated the same way.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from sqlmodel import Session, col, select

from aifi.clock import Clock, as_utc, utc_now
from aifi.dicomweb.store import DicomStore
from aifi.errors import NotFound
from aifi.hub.delivery.attempt import Attempt, Claim, Sender, confirmed_uids, describe
from aifi.hub.delivery.destinations import (
    Destination,
    DestinationsConfig,
    PacsClient,
    client_for,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import (
    Failure,
    Outbox,
    OutboxStates,
    run_each,
    run_outbox_loop,
)
from aifi.hub.persistence.tables import AiResult, Delivery, ResultInstance
from aifi.hub.persistence.tables.delivery import DeliveryState

log = logging.getLogger(__name__)

STATES = OutboxStates(
    due=DeliveryState.PENDING,
    working=DeliveryState.DELIVERING,
    done=DeliveryState.DELIVERED,
    failed=DeliveryState.FAILED,
)
CLAIM_BATCH = 16
"""Rows claimed per tick (a tick with a full batch is followed at once by the next)."""
_ERROR_CHARS = 4000
_DESTINATION_THREADS = 8


class DeliveryAudit(Protocol):
    """The audit trail's hook (issue 6, :class:`aifi.hub.audit.exports.PacsDeliveryAudit`),
    called after each recorded attempt with ``(tenant, result_pk, destination, state,
    confirmed UIDs, last_error)``: DICOM Instances Transferred (PS3.15 A.5.3.4), the
    instances confirmed this time."""

    def __call__(
        self,
        tenant: str,
        result_pk: int,
        destination: str,
        state: str,
        confirmed: list[str],
        error: str | None,
        /,
    ) -> None: ...


class Deliverer:
    """Works the ``delivery`` outbox (module docstring); one per hub process, any number
    of processes over one database."""

    def __init__(
        self,
        db: Database,
        store: DicomStore,
        destinations: DestinationsConfig,
        *,
        clock: Clock = utc_now,
        max_attempts: int = 20,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 600.0,
        lease_seconds: float = 120.0,
        client_factory: Callable[[Destination], PacsClient] = client_for,
        audit: DeliveryAudit | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if backoff_seconds <= 0 or max_backoff_seconds < backoff_seconds or lease_seconds <= 0:
            raise ValueError("backoff and lease durations must be positive (max >= first)")
        self.db = db
        self.store = store
        self.destinations = destinations
        self.clock = clock
        self.client_factory = client_factory
        self.batch_size = CLAIM_BATCH
        self.outbox = Outbox(
            db,
            Delivery,
            STATES,
            lease_seconds=lease_seconds,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            max_attempts=max_attempts,
            error_chars=_ERROR_CHARS,
        )
        self.doorbell = self.outbox.doorbell
        """Rung after a transaction that queued deliveries commits (:func:`run_delivery_loop`)."""
        self.audit = audit
        self._waiting: dict[tuple[str, str], tuple[str, datetime]] = {}
        """Destinations that reached nothing this process's last try: why, and until when
        their rows wait (one probe per destination and backoff, however many rows)."""

    # -- enqueue (in the releasing transaction) ---------------------------------------------

    def enqueue(self, session: Session, result: AiResult) -> list[Delivery]:
        """Add one pending delivery per destination of the result's tenant, in the caller's
        transaction (the one that releases the result). Idempotent: a destination that
        already has a row for this result keeps it. None for a tenant without destinations
        or a result without instances."""
        destinations = self.destinations.for_tenant(result.tenant)
        if not destinations:
            return []
        has_instances = session.exec(
            select(ResultInstance.pk)
            .where(
                col(ResultInstance.tenant) == result.tenant,
                col(ResultInstance.workitem_uid) == result.workitem_uid,
            )
            .limit(1)
        ).first()
        if has_instances is None:
            return []
        if result.pk is None:
            session.flush()
        assert result.pk is not None
        existing = set(
            session.exec(
                select(Delivery.destination).where(col(Delivery.result_pk) == result.pk)
            ).all()
        )
        now = self.clock()
        rows = [
            Delivery(
                tenant=result.tenant,
                result_pk=result.pk,
                destination=destination.name,
                state=DeliveryState.PENDING,
                attempts=0,
                next_attempt_at=now,
                delivered_sop_uids="[]",
                created_at=now,
            )
            for destination in destinations
            if destination.name not in existing
        ]
        session.add_all(rows)
        session.flush()
        if rows:  # wake this process's delivery loop once the rows are committed
            self.outbox.ring_after_commit(session)
        return rows

    def retry(self, tenant: str, workitem_uid: str, destination: str) -> None:
        """Deliver a failed (or backing-off pending) delivery again now, with a fresh set of
        attempts. NotFound when the result has no delivery to that destination."""
        with self.db.write() as session:
            pk = session.exec(
                select(Delivery.pk)
                .join(AiResult, col(AiResult.pk) == col(Delivery.result_pk))
                .where(
                    col(AiResult.tenant) == tenant,
                    col(AiResult.workitem_uid) == workitem_uid,
                    col(Delivery.destination) == destination,
                )
            ).first()
            row = self.outbox.lock(session, pk) if pk is not None else None
            if row is None:
                raise NotFound(
                    f"No delivery of the result of workitem {workitem_uid} to {destination!r}"
                )
            if not self.outbox.requeue(row, self.clock()):
                return  # delivering or delivered: nothing to do
        # Asked for now: not held back by an earlier unreachable probe; wake the loop.
        self._waiting.pop((tenant, destination), None)
        self.doorbell.ring()

    # -- the loop -----------------------------------------------------------------------

    def tick(self) -> int:
        """Claim the due rows, send, record (module docstring). One thread per destination,
        so a slow PACS does not hold up another hospital's. Returns the rows worked on."""
        claims = self.outbox.claim(
            self.clock(), _claim_of, limit=self.batch_size, taken_over=_taken_over
        )
        if not claims:
            return 0
        by_destination: dict[tuple[str, str], list[Claim]] = defaultdict(list)
        for claim in claims:
            by_destination[(claim.tenant, claim.destination)].append(claim)
        run_each(
            self._work,
            list(by_destination.values()),
            workers=_DESTINATION_THREADS,
            thread_name="aifi-delivery",
        )
        return len(claims)

    def _work(self, claims: list[Claim]) -> None:
        """One destination's rows, one after the other. When an attempt reaches nothing
        (no instance confirmed, every failure retryable: the PACS is down or busy), the
        destination's other rows are not tried until that attempt's retry is due: they
        wait without using an attempt (module docstring)."""
        key = (claims[0].tenant, claims[0].destination)
        waiting = self._waiting.get(key)
        if waiting is not None and self.clock() >= waiting[1]:
            waiting = None
        sender = Sender(self.db, self.store, self.destinations, self.client_factory)
        for claim in claims:
            if waiting is not None:
                self._defer(claim, *waiting)
                continue
            half = timedelta(seconds=self.outbox.lease_seconds / 2)
            if self.clock() >= claim.lease_until - half and not self._progress(
                claim, Attempt(wanted=[])
            ):
                continue  # held so long in this round that another process took it
            try:
                attempt = sender.attempt(claim, self._progress)
            except Exception as exc:  # a bug or a broken store: recorded, retried later
                log.exception("delivery %d to %r failed", claim.pk, claim.destination)
                attempt = Attempt(wanted=[], error=f"internal error: {type(exc).__name__}: {exc}")
            row = self._record(claim, attempt)
            self._audit(claim, attempt, row)
            if (
                row is not None
                and row.state == DeliveryState.PENDING
                and attempt.error is None
                and not attempt.confirmed
                and attempt.failures
                and all(o.retryable for o in attempt.failures.values())
            ):
                waiting = (
                    f"waiting: {claim.destination!r} failed for another result: "
                    + (row.last_error or ""),
                    as_utc(row.next_attempt_at),
                )
                self._waiting[key] = waiting
            elif row is not None:
                self._waiting.pop(key, None)

    def _audit(self, claim: Claim, attempt: Attempt, row: Delivery | None) -> None:
        """Tell the audit trail (:class:`DeliveryAudit`) about a recorded attempt."""
        if self.audit is None or row is None:
            return
        try:
            self.audit(
                claim.tenant,
                claim.result_pk,
                claim.destination,
                row.state,
                sorted(attempt.confirmed - claim.confirmed),
                row.last_error,
            )
        except Exception:  # the audit trail counts its own failures; delivery goes on
            log.exception("delivery %d: audit record failed", claim.pk)

    # -- recording ----------------------------------------------------------------------

    def _progress(self, claim: Claim, attempt: Attempt) -> bool:
        """Record the confirmations so far and renew the lease; False when the row is no
        longer this process's."""
        lease_until = self.outbox.lease_end(self.clock())
        with self.db.write() as session:
            row = self.outbox.lock(session, claim.pk)
            if row is None:
                return False
            row.delivered_sop_uids = json.dumps(
                sorted(set(confirmed_uids(row.delivered_sop_uids)) | attempt.confirmed)
            )
            if not self.outbox.owns(row, claim.attempt, claim.lease_until):
                return False
            row.lease_until = lease_until
        claim.lease_until = lease_until
        return True

    def _defer(self, claim: Claim, reason: str, until: datetime) -> None:
        """Give a claimed row back untried (its attempt not counted), due at ``until``."""
        with self.db.write() as session:
            row = self.outbox.lock(session, claim.pk)
            if row is None or not self.outbox.owns(row, claim.attempt, claim.lease_until):
                return
            self.outbox.give_back(row, until, reason)

    def _record(self, claim: Claim, attempt: Attempt) -> Delivery | None:
        """Write the attempt's outcome; the row as written (None when it is gone or no
        longer this process's)."""
        now = self.clock()
        with self.db.write() as session:
            row = self.outbox.lock(session, claim.pk)
            if row is None:
                return None
            confirmed = set(confirmed_uids(row.delivered_sop_uids)) | attempt.confirmed
            row.delivered_sop_uids = json.dumps(sorted(confirmed))
            if attempt.lost or not self.outbox.owns(row, claim.attempt, claim.lease_until):
                log.warning(
                    "delivery %d to %r: taken over by another process; its state is theirs",
                    claim.pk,
                    claim.destination,
                )
                return None
            missing = [uid for uid in attempt.wanted if uid not in confirmed]
            if attempt.wanted and not missing:
                self.outbox.settle(row, now, None)
                row.delivered_at = now
                log.info(
                    "delivery %d: %d instance(s) delivered to %r",
                    claim.pk,
                    len(confirmed),
                    claim.destination,
                )
                return row
            error, retryable = describe(claim, attempt, missing)
            self.outbox.settle(row, now, Failure(error, retryable))
            log.warning("delivery %d: %s", claim.pk, row.last_error)
            return row


def _claim_of(row: Delivery, lease_until: datetime) -> Claim:
    assert row.pk is not None
    return Claim(
        pk=row.pk,
        tenant=row.tenant,
        result_pk=row.result_pk,
        destination=row.destination,
        attempt=row.attempts,
        lease_until=lease_until,
        confirmed=set(confirmed_uids(row.delivered_sop_uids)),
    )


def _taken_over(row: Delivery) -> None:
    log.warning(
        "delivery %d to %r: lease expired (the process delivering it stopped); taken over",
        row.pk,
        row.destination,
    )


async def run_delivery_loop(deliverer: Deliverer, poll_seconds: float) -> None:
    """:meth:`Deliverer.tick` as an outbox loop
    (:func:`aifi.hub.persistence.outbox.run_outbox_loop`)."""
    await run_outbox_loop(deliverer, poll_seconds, "delivery")


__all__ = [
    "CLAIM_BATCH",
    "STATES",
    "Deliverer",
    "DeliveryAudit",
    "DeliveryState",
    "run_delivery_loop",
]
