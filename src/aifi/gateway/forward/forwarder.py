"""Store and forward: the gateway's outbox of received instances to the central hub.

Each ``gw_instance`` row (:class:`~aifi.gateway.persistence.tables.ReceivedInstance`,
written by the ingest side once the original Part 10 file is on disk) is its own outbox
entry, claimed, fenced and recorded by the outbox engine
(:class:`aifi.hub.persistence.outbox.Outbox`). :meth:`Forwarder.tick` (run by
:func:`aifi.hub.persistence.outbox.run_outbox_loop`: at once when the ingest side rings
:attr:`Forwarder.doorbell`, else every poll, and again at once after a full batch) does:

1. **Claim** the due rows in one short write transaction: ``RECEIVED`` with
   ``next_attempt_at`` reached, or ``FORWARDING`` with an expired lease (the process that
   held it died) -> ``FORWARDING``, ``attempts + 1``, ``lease_until``; at most
   ``batch_size`` rows and, by their recorded sizes, ``max_request_bytes``. PostgreSQL:
   ``SELECT … FOR UPDATE SKIP LOCKED``, so concurrent gateways take different rows; SQLite
   serialises writers (``BEGIN IMMEDIATE``) and the second one sees them taken.
2. **Pseudonymise** each original (PS3.15 Annex E, :mod:`aifi.gateway.forward.prepare`;
   e.g. :class:`aifi.gateway.deid.Pseudonymiser`). :class:`~aifi.gateway.deid.types.Quarantine`
   (e.g. burned-in annotation) or bytes that are not a readable instance -> ``QUARANTINED``
   with the reason, never sent, the file kept for an operator; a file that cannot be read
   (gone, purged) -> ``FAILED``.
3. **Record the pseudonyms** (:func:`aifi.gateway.forward.pseudonym_map.record`: UIDs,
   patient, study) and each row's ``pseudo_sop_instance_uid`` / ``pseudo_study_instance_uid``
   (and the study's) in ONE transaction that commits before anything is sent: the map never misses
   a pseudonym the hub holds, so every result can be re-identified (PS3.15 E.1.2).
4. **Send** them in STOW-RS requests (PS3.18 §10.5) of at most ``max_request_bytes``
   (:mod:`aifi.gateway.forward.stow_client`) and record each instance's outcome, fenced by
   the claim (same attempt, still ``FORWARDING``): stored or already stored ->
   ``FORWARDED``; transient (Failure Reason 0xA7xx, HTTP 408/429/503/504, no connection, a
   timeout, and 401/403 which an operator fixes at the hub) -> ``RECEIVED`` again, retried
   after ``backoff_seconds · 2^(attempts-1)`` (at most ``max_backoff_seconds``,
   :func:`~aifi.hub.persistence.outbox.retry_delay`) with ``last_error``; refused for good (HTTP
   400/409/415, Failure Reasons such as C411 "not de-identified", A9xx, Cxxx) -> ``FAILED``
   with the hub's reason.
5. **Completion signals** that are due (:mod:`aifi.gateway.forward.completion`).
6. **Purge**: originals ``FORWARDED`` longer than ``retention_seconds`` ago are deleted
   (``file`` = None, ``purged_at``; :mod:`aifi.gateway.forward.purge`); quarantined and
   failed ones (never sent; an operator looks at them) ``unsent_retention_seconds`` after
   they were received.

When a request reaches nothing (every instance transient, none stored: the hub or the
network is down, or the credentials are refused), this process sends nothing more —
instances nor signals — until that request's retry is due: a hub that is down costs one
connection attempt per backoff step, however many instances wait (their rows keep their
own ``next_attempt_at``; the failed ones carry ``last_error``).

**Delivered once.** Delivery is at least once: a crash (or a lost lease) between the hub's
answer and the commit that records it sends the instance again. Pseudonymisation is
deterministic (keyed HMAC; the same original gives the same bytes) and the hub's STOW-RS
answers an identical re-send as stored (PS3.4 B.4.1), so the hub stores it once.
``lease_seconds`` should exceed the time one tick needs to send its batch (the hub
client's timeout per request), else a slow send is taken over and repeated the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
from sqlmodel import Session, col, select

from aifi.clock import Clock, utc_now
from aifi.dicomweb.worklist import Doorbell
from aifi.gateway.forward.completion import CompletionSignals
from aifi.gateway.forward.prepare import Claim, FilePseudonymiser, Ready, prepare
from aifi.gateway.forward.pseudonym_map import record
from aifi.gateway.forward.purge import purge_forwarded, purge_unsent
from aifi.gateway.forward.stow_client import HubClient
from aifi.gateway.persistence.tables import InstanceState, ReceivedInstance, StudyProgress
from aifi.hub.delivery.dicomweb_client import SendOutcome
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import Failure, Outbox, OutboxStates, Wording

log = logging.getLogger(__name__)

MiB = 1 << 20
"""Requests are kept to a few MiB (``max_request_bytes``, default 4 MiB): httpcore sends a
body with ``socket.send`` and slices off what was sent, a copy of the rest each time, so the
cost grows with the square of the body (a 32 MiB body cost 18 ms of CPU per CT instance,
4 MiB 3.6 ms, measured with 200 CT instances against a hub on the same machine)."""

PURGE_INTERVAL_SECONDS = 2.0
"""While instances are being forwarded, forwarded originals are purged at most this often."""

STATES = OutboxStates(
    due=InstanceState.RECEIVED,
    working=InstanceState.FORWARDING,
    done=InstanceState.FORWARDED,
    failed=InstanceState.FAILED,
)
WORDING = Wording(
    refused="{error}", retry="attempt {attempts}: {error}; retry at {at}", timespec="auto"
)
"""``last_error``: a refusal is the hub's reason as it is; a retry names the attempt and
when it is due (no attempt limit: an instance is never given up while the hub is away)."""


class Forwarder:
    """The gateway's forwarding outbox (module docstring): an
    :class:`aifi.hub.persistence.outbox.OutboxWorker`. One per gateway process; several processes
    over one database take different rows."""

    def __init__(
        self,
        db: Database,
        data_dir: Path,
        pseudonymiser: FilePseudonymiser,
        hub: httpx.Client,
        *,
        clock: Clock = utc_now,
        doorbell: Doorbell | None = None,
        batch_size: int = 64,
        max_request_bytes: int = 4 * MiB,
        quiet_seconds: float = 30.0,
        retention_seconds: float = 86400.0,
        unsent_retention_seconds: float = 30 * 86400.0,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 300.0,
        lease_seconds: float = 300.0,
    ) -> None:
        if batch_size < 1 or max_request_bytes < 1:
            raise ValueError("batch_size and max_request_bytes must be at least 1")
        if backoff_seconds <= 0 or max_backoff_seconds < backoff_seconds or lease_seconds <= 0:
            raise ValueError("backoff and lease durations must be positive (max >= first)")
        if quiet_seconds < 0 or retention_seconds < 0 or unsent_retention_seconds < 0:
            raise ValueError("quiet and retention durations must not be negative")
        self.db = db
        self.data_dir = data_dir
        self.pseudonymiser = pseudonymiser
        self.client = HubClient(hub)
        self.clock = clock
        self.outbox = Outbox(
            db,
            ReceivedInstance,
            STATES,
            lease_seconds=lease_seconds,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            max_attempts=None,
            wording=WORDING,
            doorbell=doorbell,
        )
        self.doorbell = self.outbox.doorbell
        """Rung by the ingest side after each commit of received instances (and when a
        study's association ends), so forwarding starts at once."""
        self.batch_size = batch_size
        self.max_request_bytes = max_request_bytes
        self.retention_seconds = retention_seconds
        self.unsent_retention_seconds = unsent_retention_seconds
        self.completion = CompletionSignals(
            db,
            self.client,
            clock=clock,
            quiet_seconds=quiet_seconds,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            batch_size=batch_size,
        )
        self._purge_due = 0.0
        """time.monotonic() from which the next round purges even while forwarding."""
        self._hub_down_until: datetime | None = None
        """Set when a request reached nothing: nothing is sent before then."""

    # -- the round --------------------------------------------------------------------------

    def tick(self) -> int:
        """One round: forward, signal, purge. Returns the largest number of rows one of the
        steps worked on (``>= batch_size``: more may be waiting, run again at once)."""
        forwarded = signalled = purged = 0
        if self._hub_reachable():
            forwarded = self._forward()
        if self._hub_reachable():
            signalled = self.completion.tick()
        now = time.monotonic()
        if not forwarded or now >= self._purge_due:
            # During a burst, once per PURGE_INTERVAL_SECONDS (one transaction and one run
            # of deletions for many instances, not one per round); at its end, at once.
            purged = self.purge()
            self._purge_due = now + PURGE_INTERVAL_SECONDS
        return max(forwarded, signalled, purged)

    def _hub_reachable(self) -> bool:
        if self._hub_down_until is not None and self.clock() < self._hub_down_until:
            return False
        self._hub_down_until = None
        return True

    def _forward(self) -> int:
        """Steps 1-4; returns the rows claimed, or ``batch_size`` when the request size cut
        the claim short (more is due: the loop runs again at once)."""
        claims, cut = self._claim()
        if not claims:
            return 0
        ready, dropped = prepare(self.pseudonymiser, self.data_dir, claims)
        ours = self._record_pseudonyms(claims, ready, dropped)
        down: str | None = None
        for chunk in self._requests([r for r in ready if r.claim.pk in ours]):
            parts = [r.part for r in chunk]
            if down is None:
                outcomes = self.client.store(parts)
            else:
                outcomes = [SendOutcome(p.sop_instance_uid, False, True, down) for p in parts]
            retry_at = self._record_outcomes(chunk, outcomes)
            reached_nothing = all(o.retryable for o in outcomes)  # none stored, none refused
            if down is None and retry_at is not None and reached_nothing:
                down = f"not sent: an earlier request failed: {outcomes[0].reason}"
                self._hub_down_until = retry_at
        return self.batch_size if cut else len(claims)

    # -- 1. claim -----------------------------------------------------------------------------

    def _claim(self) -> tuple[list[Claim], bool]:
        """The claimed rows (oldest ``next_attempt_at`` first), and whether
        ``max_request_bytes`` left due rows behind."""
        budget = _Budget(self.max_request_bytes)
        claims = self.outbox.claim(
            self.clock(),
            _claim_of,
            limit=self.batch_size,
            take=budget.take,
            taken_over=_taken_over,
        )
        return claims, budget.cut

    # -- 2. pseudonymise (prepare.py); 3. record the pseudonyms before sending ---------------

    def _locked(self, session: Session, claims: Sequence[Claim]) -> dict[int, ReceivedInstance]:
        """The rows of ``claims`` that this tick still holds (same attempt, FORWARDING)."""
        attempts = {c.pk: c.attempt for c in claims}
        held: dict[int, ReceivedInstance] = {}
        for row in self.outbox.lock_all(session, attempts):
            assert row.pk is not None
            if self.outbox.owns(row, attempts[row.pk]):
                held[row.pk] = row
            else:
                log.warning("instance row %d: claim lost to another forwarder", row.pk)
        return held

    def _record_pseudonyms(
        self,
        claims: Sequence[Claim],
        ready: Sequence[Ready],
        dropped: dict[int, tuple[InstanceState, str]],
    ) -> set[int]:
        """One transaction, committed before anything is sent; returns the rows still held."""
        with self.db.write() as session:
            held = self._locked(session, claims)
            mine = [r for r in ready if r.claim.pk in held]
            record(session, [r.facts for r in mine])
            studies: dict[str, str] = {}
            for r in mine:
                row = held[r.claim.pk]
                row.pseudo_sop_instance_uid = r.part.sop_instance_uid
                row.pseudo_study_instance_uid = r.facts.study.pseudo_study_uid
                studies[row.study_instance_uid] = r.facts.study.pseudo_study_uid
            for pk, (state, reason) in dropped.items():
                if pk in held:
                    row = held[pk]
                    row.state = state
                    row.reason = reason
                    row.last_error = reason
                    row.lease_until = None
                    # the reason may name the original file (original UIDs): not logged
                    log.warning("instance row %d %s (reason in the row)", pk, state.value)
            if studies:
                progress = session.exec(
                    select(StudyProgress).where(col(StudyProgress.study_instance_uid).in_(studies))
                ).all()
                for study in progress:
                    pseudo = studies[study.study_instance_uid]
                    if study.pseudo_study_instance_uid != pseudo:
                        study.pseudo_study_instance_uid = pseudo
        return set(held)

    # -- 4. send and record ---------------------------------------------------------------------

    def _requests(self, ready: Sequence[Ready]) -> Iterator[list[Ready]]:
        """``ready`` in requests of at most ``max_request_bytes`` (one instance at least)."""
        chunk: list[Ready] = []
        size = 0
        for r in ready:
            if chunk and size + len(r.part.data) > self.max_request_bytes:
                yield chunk
                chunk, size = [], 0
            chunk.append(r)
            size += len(r.part.data)
        if chunk:
            yield chunk

    def _record_outcomes(
        self, chunk: Sequence[Ready], outcomes: Sequence[SendOutcome]
    ) -> datetime | None:
        """Record what the hub answered; returns the earliest retry time (None: no retry)."""
        now = self.clock()
        retry_at: datetime | None = None
        with self.db.write() as session:
            held = self._locked(session, [r.claim for r in chunk])
            for r, outcome in zip(chunk, outcomes, strict=True):
                row = held.get(r.claim.pk)
                if row is None:
                    continue  # taken over: the other forwarder records its own send
                failure = None if outcome.delivered else Failure(outcome.reason, outcome.retryable)
                self.outbox.settle(row, now, failure)
                if outcome.delivered:
                    row.forwarded_at = now
                    row.reason = None
                elif outcome.retryable:
                    if retry_at is None or row.next_attempt_at < retry_at:
                        retry_at = row.next_attempt_at
                else:
                    row.reason = outcome.reason
                    log.warning("instance row %d failed: %s", row.pk, outcome.reason)
        return retry_at

    # -- 6. purge -------------------------------------------------------------------------------

    def purge(self) -> int:
        """Delete the originals forwarded longer than ``retention_seconds`` ago, and those
        never sent (quarantined, failed) received longer than ``unsent_retention_seconds``
        ago, at most ``batch_size`` of each (:mod:`aifi.gateway.forward.purge`)."""
        now = self.clock()
        forwarded = purge_forwarded(
            self.db,
            self.data_dir,
            now=now,
            retention_seconds=self.retention_seconds,
            limit=self.batch_size,
        )
        unsent = purge_unsent(
            self.db,
            self.data_dir,
            now=now,
            retention_seconds=self.unsent_retention_seconds,
            limit=self.batch_size,
        )
        return max(forwarded, unsent)


@dataclass
class _Budget:
    """The rows one claim takes by their recorded sizes: at least one, then as many as fit
    in ``limit`` bytes (``cut``: due rows were left behind)."""

    limit: int
    total: int = 0
    taken: int = 0
    cut: bool = False

    def take(self, row: ReceivedInstance) -> bool:
        if self.taken and self.total + row.size > self.limit:
            self.cut = True
            return False
        self.total += row.size
        self.taken += 1
        return True


def _claim_of(row: ReceivedInstance, _lease_until: datetime) -> Claim:
    assert row.pk is not None
    return Claim(row.pk, row.attempts, row.file, row.study_instance_uid)


def _taken_over(row: ReceivedInstance) -> None:
    log.warning(
        "instance row %d: lease expired (the process forwarding it stopped); taken over",
        row.pk,
    )
