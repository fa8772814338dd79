"""Delivery of re-identified results into the hospital's PACS: the gateway's durable outbox
(``gw_result_delivery``), with the semantics of the hub's (:mod:`aifi.hub.delivery.deliverer`)
and on the same outbox engine (:class:`aifi.hub.persistence.outbox.Outbox`).

The results worker queues one row per result and destination in the transaction that
records the result's files (:meth:`PacsDeliverer.enqueue`; the loop is woken once it
commits). :meth:`PacsDeliverer.tick`, per due row (``pending`` and due, or ``delivering``
with an expired lease): *claims* it (``delivering``, ``attempts + 1``, ``lease_until``);
*sends* the files the PACS has not confirmed, outside any transaction, with the existing
clients (:func:`aifi.hub.delivery.destinations.client_for`: STOW-RS, PS3.18 §10.5, or
C-STORE, PS3.4 Annex B), recording confirmations after each chunk; *records* the outcome
if the claim still holds (:meth:`~aifi.hub.persistence.outbox.Outbox.settle`):
``delivered`` only when every instance is confirmed, else ``pending`` with exponential
backoff (:func:`aifi.hub.persistence.outbox.retry_delay`) and ``last_error`` naming the
destination, the instances and the PACS's reason, or ``failed`` when all still missing was
refused for good (non-retryable status) or after ``max_attempts``. A PACS that reaches
nothing (down or busy) costs one attempt per backoff step: the destination's other rows
wait untried, without using attempts.

**Delivered once.** A confirmed instance is recorded and not sent again for that row; a
crash between the confirmation and that record resends it with the *same* SOP Instance
UID, which a PACS takes as the same instance (PS3.4 B.4.1; STOW-RS "already stored",
PS3.18 §10.5.3). With no destination nothing is queued: the files stay under
``results/`` and :func:`aifi.gateway.results.status.results_status` says so.

**Purged once delivered.** With ``results_retention_seconds`` set, :meth:`PacsDeliverer.tick`
also deletes, at most once a minute, the files of results every PACS confirmed that long
ago (:mod:`aifi.gateway.results.purge`).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from sqlmodel import Session, col, select

from aifi.clock import Clock, as_utc, utc_now
from aifi.dicomweb.worklist import Doorbell
from aifi.gateway.persistence.result_tables import DeliveryState, ResultDelivery, ResultFile
from aifi.gateway.results.purge import purge_delivered_results
from aifi.gateway.results.status import describe_failures
from aifi.hub.delivery.attempt import confirmed_uids
from aifi.hub.delivery.destinations import (
    Destination,
    OutgoingInstance,
    PacsClient,
    SendOutcome,
    client_for,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import Failure, Outbox, OutboxStates

log = logging.getLogger(__name__)

STATES = OutboxStates(
    due=DeliveryState.PENDING,
    working=DeliveryState.DELIVERING,
    done=DeliveryState.DELIVERED,
    failed=DeliveryState.FAILED,
)
CHUNK = 16
"""Instances per send (one STOW-RS request / one association)."""
_ERROR_CHARS = 4000


@dataclass
class _Claim:
    """A row this process holds; (attempt, lease_until) is the fencing token."""

    pk: int
    result_pk: int
    destination: str
    attempt: int
    lease_until: datetime
    confirmed: set[str]


def _claim_of(row: ResultDelivery, lease_until: datetime) -> _Claim:
    assert row.pk is not None
    return _Claim(
        pk=row.pk,
        result_pk=row.result_pk,
        destination=row.destination,
        attempt=row.attempts,
        lease_until=lease_until,
        confirmed=set(confirmed_uids(row.delivered_sop_uids)),
    )


@dataclass
class _Attempt:
    wanted: dict[str, str] = field(default_factory=dict)
    """SOP Instance UID -> SOP Class UID of every file of the result."""
    confirmed: set[str] = field(default_factory=set)
    failures: dict[str, SendOutcome] = field(default_factory=dict)
    error: str | None = None
    """A failure of the attempt as a whole (retryable), e.g. an internal error."""


class PacsDeliverer:
    """Works the ``gw_result_delivery`` outbox (module docstring); an
    :class:`aifi.hub.persistence.outbox.OutboxWorker`."""

    def __init__(
        self,
        db: Database,
        data_dir: Path,
        destinations: Sequence[Destination],
        *,
        clock: Clock = utc_now,
        doorbell: Doorbell | None = None,
        batch_size: int = 16,
        max_attempts: int = 20,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 600.0,
        lease_seconds: float = 120.0,
        client_factory: Callable[[Destination], PacsClient] = client_for,
        results_retention_seconds: float | None = None,
    ) -> None:
        names = [d.name for d in destinations]
        if len(set(names)) != len(names):
            raise ValueError(f"PACS destination names must be unique: {names}")
        if max_attempts < 1 or batch_size < 1:
            raise ValueError("max_attempts and batch_size must be at least 1")
        if backoff_seconds <= 0 or max_backoff_seconds < backoff_seconds or lease_seconds <= 0:
            raise ValueError("backoff and lease durations must be positive (max >= first)")
        self.db = db
        self.data_dir = data_dir
        self.destinations = {d.name: d for d in destinations}
        self.clock = clock
        self.outbox = Outbox(
            db,
            ResultDelivery,
            STATES,
            lease_seconds=lease_seconds,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            max_attempts=max_attempts,
            error_chars=_ERROR_CHARS,
            doorbell=doorbell,
        )
        self.doorbell = self.outbox.doorbell
        """Rung after a transaction that queued deliveries commits."""
        self.batch_size = batch_size
        self.client_factory = client_factory
        self.results_retention_seconds = results_retention_seconds
        """Delivered results' files are purged this long after the last PACS confirmed
        them (:mod:`aifi.gateway.results.purge`); None: never."""
        self._purge_due: datetime | None = None
        self._waiting: dict[str, tuple[str, datetime]] = {}
        """Destinations that reached nothing at their last try: why, and until when."""

    # -- queueing (in the results worker's transaction) -----------------------------------

    def enqueue(self, session: Session, result_pk: int) -> list[ResultDelivery]:
        """One pending row per destination for the result, in the caller's transaction;
        idempotent (a destination that has a row keeps it); none without destinations."""
        if not self.destinations:
            return []
        existing = set(
            session.exec(
                select(ResultDelivery.destination).where(col(ResultDelivery.result_pk) == result_pk)
            ).all()
        )
        now = self.clock()
        rows = [
            ResultDelivery(
                result_pk=result_pk, destination=name, next_attempt_at=now, created_at=now
            )
            for name in self.destinations
            if name not in existing
        ]
        session.add_all(rows)
        session.flush()
        if rows:
            self.outbox.ring_after_commit(session)
        return rows

    # -- the loop -------------------------------------------------------------------------

    def tick(self) -> int:
        """Claim the due rows, send, record. Returns the rows worked on."""
        claims = self.outbox.claim(self.clock(), _claim_of, limit=self.batch_size)
        by_destination: dict[str, list[_Claim]] = defaultdict(list)
        for claim in claims:
            by_destination[claim.destination].append(claim)
        for name, group in by_destination.items():
            self._work(name, group)
        return max(len(claims), self._purge())

    def _purge(self) -> int:
        """The delivered results' files past retention, at most once a minute."""
        now = self.clock()
        if self.results_retention_seconds is None or (
            self._purge_due is not None and now < self._purge_due
        ):
            return 0
        purged = purge_delivered_results(
            self.db,
            self.data_dir,
            now=now,
            retention_seconds=self.results_retention_seconds,
            limit=self.batch_size,
        )
        self._purge_due = now if purged >= self.batch_size else now + timedelta(seconds=60)
        return purged

    def _work(self, name: str, claims: list[_Claim]) -> None:
        waiting = self._waiting.get(name)
        for claim in claims:
            if waiting is not None and self.clock() < waiting[1]:
                self._defer(claim, *waiting)
                continue
            try:
                attempt = self._attempt(claim)
            except Exception as exc:  # a bug or a broken file: recorded, retried later
                log.exception("PACS delivery %d to %r", claim.pk, name)
                attempt = _Attempt(error=f"internal error: {type(exc).__name__}: {exc}")
            row = self._record(claim, attempt)
            if row is None:
                continue
            if (
                row.state == DeliveryState.PENDING
                and attempt.error is None
                and not attempt.confirmed
                and all(o.retryable for o in attempt.failures.values())
            ):
                waiting = (
                    f"waiting: {name!r} failed for another result: {row.last_error}",
                    as_utc(row.next_attempt_at),
                )
                self._waiting[name] = waiting
            else:
                waiting = None
                self._waiting.pop(name, None)

    def _attempt(self, claim: _Claim) -> _Attempt:
        """Send what the PACS has not confirmed; network I/O outside any transaction."""
        with self.db.read() as session:
            files = list(
                session.exec(
                    select(ResultFile)
                    .where(col(ResultFile.result_pk) == claim.result_pk)
                    .order_by(col(ResultFile.pk))
                ).all()
            )
        attempt = _Attempt(wanted={f.sop_instance_uid: f.sop_class_uid for f in files})
        todo = [f for f in files if f.sop_instance_uid not in claim.confirmed]
        destination = self.destinations.get(claim.destination)
        outgoing = []
        for item in todo:
            path = self.data_dir / item.file
            reason = None
            if destination is None:
                reason = "the destination is no longer configured"
            elif not path.is_file():
                reason = f"the re-identified file {item.file} is missing"
            if reason is not None:
                attempt.failures[item.sop_instance_uid] = SendOutcome(
                    sop_instance_uid=item.sop_instance_uid,
                    delivered=False,
                    retryable=False,
                    reason=reason,
                )
                continue
            outgoing.append(
                OutgoingInstance(
                    sop_class_uid=item.sop_class_uid,
                    sop_instance_uid=item.sop_instance_uid,
                    transfer_syntax_uid=item.transfer_syntax_uid,
                    path=path,
                )
            )
        if not outgoing or destination is None:
            return attempt
        client = self.client_factory(destination)
        try:
            for start in range(0, len(outgoing), CHUNK):
                chunk = outgoing[start : start + CHUNK]
                try:
                    outcomes = {o.sop_instance_uid: o for o in client.send(chunk)}
                except Exception as exc:  # the clients should not raise; if one does, retry
                    log.exception("PACS client for %r raised", claim.destination)
                    outcomes = {}
                    failure = f"{type(exc).__name__}: {exc}"
                else:
                    failure = "the PACS's answer did not mention this instance"
                for sent in chunk:
                    outcome = outcomes.get(sent.sop_instance_uid) or SendOutcome(
                        sop_instance_uid=sent.sop_instance_uid,
                        delivered=False,
                        retryable=True,
                        reason=failure,
                    )
                    if outcome.delivered:
                        attempt.confirmed.add(sent.sop_instance_uid)
                    else:
                        attempt.failures[sent.sop_instance_uid] = outcome
                if start + CHUNK < len(outgoing) and not self._progress(claim, attempt):
                    break
        finally:
            client.close()
        return attempt

    # -- recording (fenced by the claim: Outbox.lock / Outbox.owns) ------------------------

    def _progress(self, claim: _Claim, attempt: _Attempt) -> bool:
        """Record the confirmations so far and renew the lease; False when lost."""
        lease_until = self.outbox.lease_end(self.clock())
        with self.db.write() as session:
            row = self.outbox.lock(session, claim.pk)
            if row is None:
                return False
            _add_confirmed(row, attempt.confirmed)
            if not self.outbox.owns(row, claim.attempt, claim.lease_until):
                return False
            row.lease_until = lease_until
        claim.lease_until = lease_until
        return True

    def _defer(self, claim: _Claim, reason: str, until: datetime) -> None:
        """Give a claimed row back untried (its attempt not counted), due at ``until``."""
        with self.db.write() as session:
            row = self.outbox.lock(session, claim.pk)
            if row is None or not self.outbox.owns(row, claim.attempt, claim.lease_until):
                return
            self.outbox.give_back(row, until, reason)

    def _record(self, claim: _Claim, attempt: _Attempt) -> ResultDelivery | None:
        now = self.clock()
        with self.db.write() as session:
            row = self.outbox.lock(session, claim.pk)
            if row is None:
                return None
            confirmed = _add_confirmed(row, attempt.confirmed)
            if not self.outbox.owns(row, claim.attempt, claim.lease_until):
                log.warning("PACS delivery %d: taken over by another process", claim.pk)
                return None
            missing = [uid for uid in attempt.wanted if uid not in confirmed]
            if attempt.wanted and not missing:
                self.outbox.settle(row, now, None)
                row.delivered_at = now
                log.info("PACS delivery %d: delivered to %r", claim.pk, claim.destination)
                return row
            self.outbox.settle(row, now, _failure(claim, attempt, missing))
            log.warning("PACS delivery %d: %s", claim.pk, row.last_error)
            return row


def _add_confirmed(row: ResultDelivery, confirmed: set[str]) -> set[str]:
    """Add ``confirmed`` to the row's ``delivered_sop_uids``; returns them all."""
    merged = set(confirmed_uids(row.delivered_sop_uids)) | confirmed
    row.delivered_sop_uids = json.dumps(sorted(merged))
    return merged


def _failure(claim: _Claim, attempt: _Attempt, missing: list[str]) -> Failure:
    """A failed attempt (``missing`` still unconfirmed) as ``last_error`` starts, and
    whether a later one may succeed."""
    prefix = f"attempt {claim.attempt} to {claim.destination!r}: "
    if attempt.error is not None:
        return Failure(prefix + attempt.error, retryable=True)
    if not attempt.wanted:
        return Failure(prefix + "the result has no files", retryable=False)
    failures = {
        uid: attempt.failures.get(uid)
        or SendOutcome(sop_instance_uid=uid, delivered=False, retryable=True, reason="not sent")
        for uid in missing
    }
    error = describe_failures(claim.attempt, claim.destination, failures, attempt.wanted)
    return Failure(error, retryable=any(o.retryable for o in failures.values()))
