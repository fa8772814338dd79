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
:func:`run_delivery_loop`, in every hub process) does, per due row:

1. *claim* it in one short write transaction: state ``delivering``, ``attempts + 1`` and
   ``lease_until = now + lease_seconds``. Due means ``pending`` with ``next_attempt_at``
   reached, or ``delivering`` with an expired lease (the process that held it died).
   PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED``, so concurrent processes take different
   rows; SQLite: write transactions are serialised (``BEGIN IMMEDIATE``), and the second
   process sees the row already ``delivering``.
2. *send*, outside any database transaction, the result's instances the PACS has not yet
   confirmed (``delivered_sop_uids``), files from the hub's store, in chunks; after each
   chunk the confirmations are recorded and the lease renewed.
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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pydicom.uid import UID
from sqlalchemy import and_, event, or_
from sqlmodel import Session, col, select

from aifi.dicomweb.store import DicomStore
from aifi.dicomweb.worklist import Doorbell
from aifi.errors import NotFound
from aifi.hub.delivery.destinations import (
    Destination,
    DestinationsConfig,
    OutgoingInstance,
    PacsClient,
    SendOutcome,
    client_for,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import retry_delay, run_outbox_loop
from aifi.hub.persistence.tables import AiResult, Delivery, ResultInstance

log = logging.getLogger(__name__)

PENDING = "pending"
DELIVERING = "delivering"
DELIVERED = "delivered"
FAILED = "failed"
STATES = (PENDING, DELIVERING, DELIVERED, FAILED)

CLAIM_BATCH = 16
"""Rows claimed per tick (a tick with a full batch is followed at once by the next)."""
CHUNK = 16
"""Instances per send (one STOW-RS request / one association); confirmations are
recorded after each."""
_ERROR_ITEMS = 5
_ERROR_CHARS = 4000


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive date-times; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _uids(packed: str) -> list[str]:
    value = json.loads(packed or "[]")
    return [str(v) for v in value] if isinstance(value, list) else []


def _sop_class_name(uid: str) -> str:
    name = UID(uid).name
    return name if name and name != uid else uid


@dataclass
class _Claim:
    """One row this process holds: the fencing token is (attempt, lease_until)."""

    pk: int
    tenant: str
    result_pk: int
    destination: str
    attempt: int
    lease_until: datetime
    confirmed: set[str] = field(default_factory=set)


@dataclass
class _Attempt:
    """What one attempt found out: instances confirmed, and why the others were not."""

    wanted: list[str]
    """Every SOP Instance UID of the result (empty: nothing to deliver)."""
    sop_classes: dict[str, str] = field(default_factory=dict)
    confirmed: set[str] = field(default_factory=set)
    failures: dict[str, SendOutcome] = field(default_factory=dict)
    error: str | None = None
    """A failure of the attempt as a whole (retryable), e.g. an internal error."""
    lost: bool = False
    """The lease was taken over by another process meanwhile: record nothing but UIDs."""


class Deliverer:
    """Works the ``delivery`` outbox (module docstring); one per hub process, any number
    of processes over one database."""

    def __init__(
        self,
        db: Database,
        store: DicomStore,
        destinations: DestinationsConfig,
        *,
        clock: Callable[[], datetime] = _now,
        max_attempts: int = 20,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 600.0,
        lease_seconds: float = 120.0,
        client_factory: Callable[[Destination], PacsClient] = client_for,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if backoff_seconds <= 0 or max_backoff_seconds < backoff_seconds or lease_seconds <= 0:
            raise ValueError("backoff and lease durations must be positive (max >= first)")
        self.db = db
        self.store = store
        self.destinations = destinations
        self.clock = clock
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.lease_seconds = lease_seconds
        self.client_factory = client_factory
        self.batch_size = CLAIM_BATCH
        self.doorbell = Doorbell()
        """Rung after a transaction that queued deliveries commits (:func:`run_delivery_loop`)."""
        self.audit: Callable[[str, int, str, str, list[str], str | None], None] | None = None
        """``(tenant, result_pk, destination, state, confirmed UIDs, last_error)`` after each
        recorded attempt: the audit trail's hook (issue 6, :func:`aifi.hub.audit.trail.install`)."""
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
                state=PENDING,
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
            event.listen(session, "after_commit", self._ring, once=True)
        return rows

    def _ring(self, _session: Session) -> None:
        self.doorbell.ring()

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
            row = self._locked(session, pk) if pk is not None else None
            if row is None:
                raise NotFound(
                    f"No delivery of the result of workitem {workitem_uid} to {destination!r}"
                )
            if row.state not in (FAILED, PENDING):
                return  # delivering or delivered: nothing to do
            if row.state == FAILED:
                row.attempts = 0
            row.state = PENDING
            row.next_attempt_at = self.clock()
            row.lease_until = None
        # Asked for now: not held back by an earlier unreachable probe; wake the loop.
        self._waiting.pop((tenant, destination), None)
        self.doorbell.ring()

    # -- the loop -----------------------------------------------------------------------

    def tick(self) -> int:
        """Claim the due rows, send, record (module docstring). One thread per destination,
        so a slow PACS does not hold up another hospital's. Returns the rows worked on."""
        claims = self._claim()
        if not claims:
            return 0
        by_destination: dict[tuple[str, str], list[_Claim]] = defaultdict(list)
        for claim in claims:
            by_destination[(claim.tenant, claim.destination)].append(claim)
        groups = list(by_destination.values())
        if len(groups) == 1:
            self._work(groups[0])
        else:
            with ThreadPoolExecutor(min(len(groups), 8), "aifi-delivery") as pool:
                for future in [pool.submit(self._work, group) for group in groups]:
                    future.result()
        return len(claims)

    def _claim(self) -> list[_Claim]:
        now = self.clock()
        lease_until = now + timedelta(seconds=self.lease_seconds)
        due = or_(
            and_(col(Delivery.state) == PENDING, col(Delivery.next_attempt_at) <= now),
            and_(col(Delivery.state) == DELIVERING, col(Delivery.lease_until) < now),
        )
        stmt = (
            select(Delivery)
            .where(due)
            .order_by(col(Delivery.next_attempt_at), col(Delivery.pk))
            .limit(self.batch_size)
        )
        if not self.db.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        claims = []
        with self.db.write() as session:
            for row in session.exec(stmt).all():
                assert row.pk is not None
                if row.state == DELIVERING:
                    log.warning(
                        "delivery %d to %r: lease expired (the process delivering it "
                        "stopped); taken over",
                        row.pk,
                        row.destination,
                    )
                row.state = DELIVERING
                row.attempts += 1
                row.lease_until = lease_until
                claims.append(
                    _Claim(
                        pk=row.pk,
                        tenant=row.tenant,
                        result_pk=row.result_pk,
                        destination=row.destination,
                        attempt=row.attempts,
                        lease_until=lease_until,
                        confirmed=set(_uids(row.delivered_sop_uids)),
                    )
                )
        return claims

    def _work(self, claims: list[_Claim]) -> None:
        """One destination's rows, one after the other. When an attempt reaches nothing
        (no instance confirmed, every failure retryable: the PACS is down or busy), the
        destination's other rows are not tried until that attempt's retry is due: they
        wait without using an attempt (module docstring)."""
        key = (claims[0].tenant, claims[0].destination)
        waiting = self._waiting.get(key)
        if waiting is not None and self.clock() >= waiting[1]:
            waiting = None
        for claim in claims:
            if waiting is not None:
                self._defer(claim, *waiting)
                continue
            half = timedelta(seconds=self.lease_seconds / 2)
            if self.clock() >= claim.lease_until - half and not self._progress(
                claim, _Attempt(wanted=[])
            ):
                continue  # held so long in this round that another process took it
            try:
                attempt = self._attempt(claim)
            except Exception as exc:  # a bug or a broken store: recorded, retried later
                log.exception("delivery %d to %r failed", claim.pk, claim.destination)
                attempt = _Attempt(wanted=[], error=f"internal error: {type(exc).__name__}: {exc}")
            row = self._record(claim, attempt)
            self._audit(claim, attempt, row)
            if (
                row is not None
                and row.state == PENDING
                and attempt.error is None
                and not attempt.confirmed
                and attempt.failures
                and all(o.retryable for o in attempt.failures.values())
            ):
                waiting = (
                    f"waiting: {claim.destination!r} failed for another result: "
                    + (row.last_error or ""),
                    _utc(row.next_attempt_at),
                )
                self._waiting[key] = waiting
            elif row is not None:
                self._waiting.pop(key, None)

    def _attempt(self, claim: _Claim) -> _Attempt:
        """Send what the PACS has not confirmed yet; the network I/O is here, outside any
        database transaction."""
        with self.db.read() as session:
            result = session.get(AiResult, claim.result_pk)
            instances = (
                list(
                    session.exec(
                        select(ResultInstance)
                        .where(
                            col(ResultInstance.tenant) == result.tenant,
                            col(ResultInstance.workitem_uid) == result.workitem_uid,
                        )
                        .order_by(col(ResultInstance.pk))
                    ).all()
                )
                if result is not None
                else []
            )
        attempt = _Attempt(
            wanted=[i.sop_instance_uid for i in instances],
            sop_classes={i.sop_instance_uid: i.sop_class_uid for i in instances},
        )
        todo = [i for i in instances if i.sop_instance_uid not in claim.confirmed]
        if not todo:
            return attempt
        destination = self.destinations.destination(claim.tenant, claim.destination)
        if destination is None:
            for item in todo:
                attempt.failures[item.sop_instance_uid] = SendOutcome(
                    sop_instance_uid=item.sop_instance_uid,
                    delivered=False,
                    retryable=False,
                    reason="the destination is no longer configured for this tenant",
                )
            return attempt
        outgoing = self._outgoing(claim.tenant, todo, attempt)
        if not outgoing:
            return attempt
        client = self.client_factory(destination)
        try:
            for start in range(0, len(outgoing), CHUNK):
                chunk = outgoing[start : start + CHUNK]
                try:
                    outcomes = client.send(chunk)
                except Exception as exc:  # the client should not raise; if it does, retry
                    log.exception("PACS client for %r raised", claim.destination)
                    outcomes = [
                        SendOutcome(
                            sop_instance_uid=o.sop_instance_uid,
                            delivered=False,
                            retryable=True,
                            reason=f"{type(exc).__name__}: {exc}",
                        )
                        for o in chunk
                    ]
                by_uid = {o.sop_instance_uid: o for o in outcomes}
                for sent in chunk:
                    outcome = by_uid.get(sent.sop_instance_uid) or SendOutcome(
                        sop_instance_uid=sent.sop_instance_uid,
                        delivered=False,
                        retryable=True,
                        reason="the PACS's answer did not mention this instance",
                    )
                    if outcome.delivered:
                        attempt.confirmed.add(sent.sop_instance_uid)
                    else:
                        attempt.failures[sent.sop_instance_uid] = outcome
                if start + CHUNK < len(outgoing) and not self._progress(claim, attempt):
                    attempt.lost = True
                    break
        finally:
            client.close()
        return attempt

    def _outgoing(
        self, tenant: str, todo: Sequence[ResultInstance], attempt: _Attempt
    ) -> list[OutgoingInstance]:
        """The stored files of ``todo``; one missing from the hub's store is a failure."""
        stored = {}
        for study_uid, series_uid in dict.fromkeys(
            (i.study_instance_uid, i.series_instance_uid) for i in todo
        ):
            for s in self.store.find_instances(tenant, study_uid, series_uid):
                stored[s.sop_instance_uid] = s
        outgoing = []
        for item in todo:
            found = stored.get(item.sop_instance_uid)
            if found is None or not found.path.is_file():
                attempt.failures[item.sop_instance_uid] = SendOutcome(
                    sop_instance_uid=item.sop_instance_uid,
                    delivered=False,
                    retryable=False,
                    reason="not in the hub's store",
                )
                continue
            outgoing.append(
                OutgoingInstance(
                    sop_class_uid=found.sop_class_uid,
                    sop_instance_uid=found.sop_instance_uid,
                    transfer_syntax_uid=found.transfer_syntax_uid,
                    path=found.path,
                )
            )
        return outgoing

    def _audit(self, claim: _Claim, attempt: _Attempt, row: Delivery | None) -> None:
        """Tell the audit trail (issue 6, :mod:`aifi.hub.audit.trail`) about a recorded attempt:
        DICOM Instances Transferred (PS3.15 A.5.3.4), the instances confirmed this time."""
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

    def _locked(self, session: Session, pk: int) -> Delivery | None:
        return session.get(Delivery, pk, with_for_update=not self.db.is_sqlite)

    def _owned(self, row: Delivery, claim: _Claim) -> bool:
        return (
            row.state == DELIVERING
            and row.attempts == claim.attempt
            and row.lease_until is not None
            and _utc(row.lease_until) == claim.lease_until
        )

    def _progress(self, claim: _Claim, attempt: _Attempt) -> bool:
        """Record the confirmations so far and renew the lease; False when the row is no
        longer this process's."""
        lease_until = self.clock() + timedelta(seconds=self.lease_seconds)
        with self.db.write() as session:
            row = self._locked(session, claim.pk)
            if row is None:
                return False
            row.delivered_sop_uids = json.dumps(
                sorted(set(_uids(row.delivered_sop_uids)) | attempt.confirmed)
            )
            if not self._owned(row, claim):
                return False
            row.lease_until = lease_until
        claim.lease_until = lease_until
        return True

    def _defer(self, claim: _Claim, reason: str, until: datetime) -> None:
        """Give a claimed row back untried (its attempt not counted), due at ``until``."""
        with self.db.write() as session:
            row = self._locked(session, claim.pk)
            if row is None or not self._owned(row, claim):
                return
            row.state = PENDING
            row.attempts -= 1
            row.lease_until = None
            row.next_attempt_at = until
            row.last_error = reason[:_ERROR_CHARS]

    def _record(self, claim: _Claim, attempt: _Attempt) -> Delivery | None:
        """Write the attempt's outcome; the row as written (None when it is gone or no
        longer this process's)."""
        now = self.clock()
        with self.db.write() as session:
            row = self._locked(session, claim.pk)
            if row is None:
                return None
            confirmed = set(_uids(row.delivered_sop_uids)) | attempt.confirmed
            row.delivered_sop_uids = json.dumps(sorted(confirmed))
            if attempt.lost or not self._owned(row, claim):
                log.warning(
                    "delivery %d to %r: taken over by another process; its state is theirs",
                    claim.pk,
                    claim.destination,
                )
                return None
            row.lease_until = None
            missing = [uid for uid in attempt.wanted if uid not in confirmed]
            if attempt.wanted and not missing:
                row.state = DELIVERED
                row.delivered_at = now
                row.last_error = None
                log.info(
                    "delivery %d: %d instance(s) delivered to %r",
                    claim.pk,
                    len(confirmed),
                    claim.destination,
                )
                return row
            if attempt.error is not None:
                error = f"attempt {claim.attempt} to {claim.destination!r}: {attempt.error}"
                retryable = True
            elif not attempt.wanted:
                error = (
                    f"attempt {claim.attempt} to {claim.destination!r}: the result has no instances"
                )
                retryable = False
            else:
                failures = {
                    uid: attempt.failures.get(uid)
                    or SendOutcome(
                        sop_instance_uid=uid, delivered=False, retryable=True, reason="not sent"
                    )
                    for uid in missing
                }
                error = _describe(claim, failures, attempt.sop_classes)
                retryable = any(o.retryable for o in failures.values())
            if not retryable:
                row.state = FAILED
                row.last_error = f"{error}; refused, not retried"
            elif row.attempts >= self.max_attempts:
                row.state = FAILED
                row.last_error = f"{error}; gave up after {row.attempts} attempts"
            else:
                delay = retry_delay(row.attempts, self.backoff_seconds, self.max_backoff_seconds)
                row.state = PENDING
                row.next_attempt_at = now + timedelta(seconds=delay)
                row.last_error = (
                    f"{error}; retry at {row.next_attempt_at.isoformat(timespec='seconds')}"
                )
            row.last_error = row.last_error[:_ERROR_CHARS]
            log.warning("delivery %d: %s", claim.pk, row.last_error)
            return row


def _describe(claim: _Claim, failures: dict[str, SendOutcome], classes: dict[str, str]) -> str:
    """``attempt N to 'dest': uid (SOP class): reason; …``, instances with the same
    reason grouped (a PACS that is down gives one reason for all)."""
    by_reason: dict[str, list[str]] = defaultdict(list)
    for uid, outcome in failures.items():
        by_reason[outcome.reason or "no reason given"].append(uid)
    parts = []
    for reason, uids in by_reason.items():
        named = [
            f"{uid} ({_sop_class_name(classes[uid])})" if uid in classes else uid
            for uid in uids[:_ERROR_ITEMS]
            if uid
        ]
        if len(uids) > _ERROR_ITEMS:
            named.append(f"and {len(uids) - _ERROR_ITEMS} more")
        parts.append(f"{', '.join(named)}: {reason}" if named else reason)
    return f"attempt {claim.attempt} to {claim.destination!r}: " + "; ".join(parts)


async def run_delivery_loop(deliverer: Deliverer, poll_seconds: float) -> None:
    """:meth:`Deliverer.tick` as an outbox loop
    (:func:`aifi.hub.persistence.outbox.run_outbox_loop`)."""
    await run_outbox_loop(deliverer, poll_seconds, "delivery")


__all__ = [
    "DELIVERED",
    "DELIVERING",
    "FAILED",
    "PENDING",
    "STATES",
    "Deliverer",
    "run_delivery_loop",
]
