"""The per-hospital EPD push at the gateway (issue 17): each DiagnosticReport that is
``final`` at the hub goes to the hospital's EPD as a FHIR R4 transaction of conditional
creates (:func:`aifi.fhir.epd_client.report_transaction`; http.html#transaction,
http.html#ccreate), with the hospital's identities (:meth:`FhirTranslator.reidentify`).

**Where the push is configured.** With a gateway, the hospital sets ``fhir.epd_url`` in the
gateway's configuration (:class:`aifi.gateway.config.FhirConfig`) and leaves the hub's
per-tenant ``epd_url`` empty: the hub holds only pseudonyms, so its own push
(:mod:`aifi.hub.fhir.epd_push`) would carry them. The hub's push stays for single-site
set-ups without a gateway.

**How.** The hub never calls into the hospital, so the gateway follows
``DiagnosticReport?status=final`` at the hub (:class:`aifi.gateway.fhir.changes.ChangeFollower`,
follow ``epd-push``) and, in the transaction that moves the cursor, queues one
``gw_epd_push`` row per report (unique per report: a report pushed once is not queued
again). Rows are worked off with the outbox engine (:class:`aifi.hub.persistence.outbox.Outbox`:
claim with a lease, exponential backoff): only the oldest open row is sent, so an EPD that
is down costs one timeout per backoff step however many reports wait. At send time the
report and its Observations are read from the hub as they are then, re-identified and
POSTed as one transaction Bundle. A failure the EPD or the hub may get over (network, 408,
429, 503, 504) is retried for ever — nothing is lost, also across a restart (the rows are
in the gateway's database); another answer fails the row with the EPD's reason. Nothing is
duplicated: the transaction's conditional creates (``ifNoneExist`` on each resource's
identifier) make a second push of the same report — a retry after a lost response — create
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import httpx
from sqlalchemy import func
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from aifi.clock import Clock, utc_now
from aifi.dicomweb.worklist import Doorbell
from aifi.errors import AifiError, HubError, UpstreamError
from aifi.fhir.epd_client import DeliveryFailed, post_bundle, report_transaction
from aifi.fhir.types import Resource
from aifi.gateway.fhir.changes import Change, ChangeFollower
from aifi.gateway.persistence.fhir_tables import EpdPushRow, RelayState
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import Failure, Outbox, OutboxStates

log = logging.getLogger(__name__)

FOLLOW = "epd-push"
CRITERIA: list[tuple[str, str]] = [("status", "final")]
"""What the push follows at the hub: final DiagnosticReports (no identifier in it, so the
query needs no pseudonymisation)."""
STATES = OutboxStates(
    due=RelayState.PENDING,
    working=RelayState.SENDING,
    done=RelayState.DELIVERED,
    failed=RelayState.FAILED,
)
OPEN = (RelayState.PENDING, RelayState.SENDING)


class HubReader(Protocol):
    """What the push uses of :class:`aifi.gateway.fhir.hub_fhir.HubFhir`."""

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> dict[str, Any]: ...

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]: ...


class Reidentify(Protocol):
    """What the push uses of :class:`aifi.gateway.fhir.translate.FhirTranslator`."""

    def reidentify(self, resource: Resource) -> Resource: ...


@dataclass(frozen=True, slots=True)
class PushClaim:
    pk: int
    report_id: str
    attempt: int
    lease_until: datetime


def _claim_of(row: EpdPushRow, lease_until: datetime) -> PushClaim:
    assert row.pk is not None
    return PushClaim(row.pk, row.report_id, row.attempts, lease_until)


class EpdPusher:
    """Follows the hub's final reports and pushes each once to the EPD at ``epd_url``
    (module docstring); an :class:`aifi.hub.persistence.outbox.OutboxWorker` of the
    gateway's worker process."""

    def __init__(
        self,
        db: Database,
        follower: ChangeFollower,
        hub: HubReader,
        translator: Reidentify,
        epd_url: str,
        epd: httpx.Client,
        *,
        clock: Clock = utc_now,
        doorbell: Doorbell | None = None,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 300.0,
        lease_seconds: float = 120.0,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.follower = follower
        self.hub = hub
        self.translator = translator
        self.epd_url = epd_url.rstrip("/")
        self.epd = epd
        self.clock = clock
        self._on_close = on_close
        self.batch_size = 16
        self.outbox = Outbox(
            db,
            EpdPushRow,
            STATES,
            lease_seconds=lease_seconds,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            max_attempts=None,
            error_chars=2000,
            doorbell=doorbell,
        )
        self.doorbell = self.outbox.doorbell
        """The follow starts at the first round (:meth:`ChangeFollower.poll`): the push
        carries the reports that become final once it is configured."""

    def close(self) -> None:
        """Close the EPD client, then ``on_close`` (e.g. the worker's own client of the
        hub)."""
        self.epd.close()
        if self._on_close is not None:
            self._on_close()

    def tick(self) -> int:
        """One round: follow the hub's final reports, then push the oldest open report
        while pushes succeed. Returns the reports queued plus the pushes tried."""
        worked = self.follower.poll(FOLLOW, "DiagnosticReport", list(CRITERIA), self._queue).changes
        for _ in range(self.batch_size):
            claims = self._claim()
            if not claims:
                break
            worked += 1
            if not self._work(claims[0]):
                break
        return worked

    def _queue(self, session: Session, changes: Sequence[Change]) -> None:
        for change in changes:
            known = session.exec(
                select(EpdPushRow.pk).where(col(EpdPushRow.report_id) == change.resource_id)
            ).first()
            if known is not None:
                continue
            now = self.clock()
            session.add(
                EpdPushRow(
                    report_id=change.resource_id,
                    version_id=change.version_id,
                    next_attempt_at=now,
                    created_at=now,
                )
            )
            self.outbox.ring_after_commit(session)

    def _claim(self) -> list[PushClaim]:
        other = aliased(EpdPushRow)
        head = select(func.min(other.pk)).where(col(other.state).in_(OPEN)).scalar_subquery()
        return self.outbox.claim(
            self.clock(), _claim_of, limit=1, where=[col(EpdPushRow.pk) == head]
        )

    def _work(self, claim: PushClaim) -> bool:
        failure: DeliveryFailed | None = None
        try:
            self.send(claim.report_id)
        except DeliveryFailed as exc:
            failure = exc
        except Exception as exc:  # a bug: recorded, retried later
            log.exception("EPD push %d failed", claim.pk)
            failure = DeliveryFailed(f"internal error: {type(exc).__name__}: {exc}", retryable=True)
        now = self.clock()
        with self.db.write() as session:
            row = self.outbox.lock(session, claim.pk)
            if row is None or not self.outbox.owns(row, claim.attempt, claim.lease_until):
                log.warning("EPD push %d: taken over by another process", claim.pk)
                return False
            if failure is None:
                self.outbox.settle(row, now, None)
                row.delivered_at = now
                log.info("DiagnosticReport/%s pushed to %s", claim.report_id, self.epd_url)
            else:
                error = f"attempt {row.attempts}: {failure.reason}"
                self.outbox.settle(row, now, Failure(error, failure.retryable))
                log.warning("push of DiagnosticReport/%s: %s", claim.report_id, row.last_error)
            session.add(row)
        return failure is None

    def _read(self, resource_type: str, resource_id: str) -> Resource:
        try:
            return self.hub.read(resource_type, resource_id)
        except UpstreamError as exc:
            raise DeliveryFailed(f"hub unreachable: {exc.reason}", retryable=True) from exc
        except HubError as exc:
            raise DeliveryFailed(
                f"{resource_type}/{resource_id} at the hub: {exc.reason}", retryable=False
            ) from exc

    def _reidentify(self, resource: Resource) -> Resource:
        try:
            return self.translator.reidentify(resource)
        except AifiError as exc:  # never pushed with a pseudonym in it
            raise DeliveryFailed(
                f"{resource.get('resourceType')}/{resource.get('id')} cannot be "
                f"re-identified: {exc}",
                retryable=False,
            ) from exc

    def send(self, report_id: str) -> None:
        """Read the report and its Observations at the hub, re-identify them and POST the
        transaction to the EPD; :class:`DeliveryFailed` when that does not work."""
        report = self._read("DiagnosticReport", report_id)
        observations = []
        for ref in report.get("result") or []:
            kind, _, obs_id = str((ref or {}).get("reference") or "").rpartition("/")
            if kind.rsplit("/", 1)[-1] == "Observation" and obs_id:
                observations.append(self._reidentify(self._read("Observation", obs_id)))
        try:
            bundle = report_transaction(self._reidentify(report), observations)
        except ValueError as exc:
            raise DeliveryFailed(str(exc), retryable=False) from exc
        post_bundle(self.epd, self.epd_url, bundle)


__all__ = ["CRITERIA", "FOLLOW", "EpdPusher"]
