"""FHIR notifications out of the hub: rest-hook Subscriptions (HL7 Subscriptions R5 Backport
IG for R4; :mod:`aifi.hub.fhir.subscription_channel`), the push of final DiagnosticReports
to each hospital's EPD (:mod:`aifi.hub.fhir.epd_push`) and the urgent-finding webhook
(:mod:`aifi.hub.fhir.webhook`). One durable outbox (``fhir_outbox``)
worked with the outbox engine (:class:`aifi.hub.persistence.outbox.Outbox`), like the PACS
outbox of :mod:`aifi.hub.delivery.deliverer`.

**Queueing** (in the transaction that changes the resource, so nothing is lost by a restart):
:meth:`FhirNotifier.on_change` is a ChangeListener of the FHIR store and hands the change to
each channel (an event per matching Subscription; a push per report that becomes final; a
webhook call per new urgent-finding Communication);
:meth:`FhirNotifier.subscription_created` / :meth:`FhirNotifier.subscription_removed` keep a
Subscription's state and queue its handshake; heartbeats are queued at the start of each
tick.

**Working it off** (:meth:`FhirNotifier.tick`, run by :func:`run_fhir_notify_loop`). Rows form
queues: one per subscription, one per tenant's EPD. Only the *head* of a queue (its oldest
row not yet delivered or failed) is sent, so event N+1 never overtakes event N (IG
"Notifications": a subscriber detects missing events by their numbers and should not see
them out of order), and an EPD that is down costs one timeout per backoff step, however
many reports wait. As in the PACS outbox, a row is *claimed* in a short write transaction
(``sending``, attempt + 1, a lease; PostgreSQL ``FOR UPDATE SKIP LOCKED``), *sent* outside
any transaction, and the outcome *recorded* if the row is still this process's:

- success → ``delivered`` (a subscription becomes ``active`` again);
- failure → ``pending`` with exponential backoff (``backoff_seconds · 2^(attempts-1)``, at
  most ``max_backoff_seconds``) and ``last_error``; ``failed`` after ``max_attempts`` or at
  once when not retryable (an HTTP status other than 408/429/503/504, or a subscription
  that is gone/off); a subscription is set to ``error`` (its channel's module docstring).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Protocol

from sqlalchemy import and_, func, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from aifi.clock import Clock, as_utc, utc_now
from aifi.errors import HubError
from aifi.fhir.epd_client import DeliveryFailed
from aifi.fhir.types import Resource, StoredResource
from aifi.hub.fhir.epd_push import EpdPush
from aifi.hub.fhir.messages import (
    DELIVERED,
    EPD_PUSH,
    ERROR_CHARS,
    EVENT,
    FAILED,
    OPEN,
    PENDING,
    SENDING,
    STATES,
    SUBSCRIPTION,
    WEBHOOK,
    Clients,
    Matcher,
    Message,
    ResourceStore,
)
from aifi.hub.fhir.subscription_channel import SubscriptionChannel
from aifi.hub.fhir.webhook import WebhookChannel
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import Failure, Outbox, run_each, run_outbox_loop
from aifi.hub.persistence.tables import FhirOutbox

log = logging.getLogger(__name__)

CLAIM_BATCH = 32
MAX_ROUNDS = 20
"""Rounds per tick: each round sends the head of every queue that is due."""


class NotifyAudit(Protocol):
    """The audit trail's hook (issue 6, :class:`aifi.hub.audit.exports.FhirExportAudit`),
    called after each attempt to send a resource out (EPD push, webhook, event notification) with
    ``(tenant, channel, subscription id, focus (type, id), error, retryable)``: DCM 110106
    Export, PS3.15 A.5.3.6."""

    def __call__(
        self,
        tenant: str,
        channel: str,
        subscription_id: str | None,
        focus: tuple[str, str] | None,
        error: str | None,
        retryable: bool,
        /,
    ) -> None: ...


class FhirNotifier:
    """Queues and sends FHIR notifications and EPD pushes (module docstring); one per hub
    process, any number of processes over one database."""

    def __init__(
        self,
        db: Database,
        store: ResourceStore,
        *,
        base_url: str | Callable[[], str],
        push_targets: Mapping[str, str] | None = None,
        webhook_url: str | None = None,
        webhook_urls: Mapping[str, str] | None = None,
        matcher: Matcher,
        clock: Clock = utc_now,
        max_attempts: int = 10,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 300.0,
        timeout_seconds: float = 10.0,
        lease_seconds: float = 60.0,
        workers: int = 8,
        audit: NotifyAudit | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if backoff_seconds <= 0 or max_backoff_seconds < backoff_seconds:
            raise ValueError("backoff durations must be positive (max >= first)")
        if timeout_seconds <= 0 or lease_seconds <= timeout_seconds:
            raise ValueError("the lease must be longer than the send timeout")
        self.db = db
        self.store = store
        self._base_url = base_url
        self.clock = clock
        self.workers = workers
        self.batch_size = CLAIM_BATCH
        self.outbox = Outbox(
            db,
            FhirOutbox,
            STATES,
            lease_seconds=lease_seconds,
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            max_attempts=max_attempts,
            error_chars=ERROR_CHARS,
        )
        self.doorbell = self.outbox.doorbell
        """Rung after a transaction that queued rows commits (:func:`run_fhir_notify_loop`)."""
        self._clients = Clients(timeout_seconds, workers)
        self.subscriptions = SubscriptionChannel(
            db,
            store,
            self.outbox,
            matcher=matcher,
            base_url=lambda: self.base_url,
            clock=clock,
            client=self._clients,
            timeout_seconds=timeout_seconds,
        )
        self.epd = EpdPush(
            db, store, self.outbox, push_targets or {}, clock=clock, client=self._clients
        )
        self.push_targets = self.epd.targets
        """Tenant → the FHIR base URL of its EPD."""
        self.webhook = WebhookChannel(
            db,
            store,
            self.outbox,
            default_url=webhook_url,
            urls=webhook_urls or {},
            clock=clock,
            client=self._clients,
        )
        """The urgent-finding webhook (:mod:`aifi.hub.fhir.webhook`)."""
        self.audit = audit

    @property
    def base_url(self) -> str:
        """The hub's public FHIR base (``…/fhir``), as notifications name resources."""
        value = self._base_url() if callable(self._base_url) else self._base_url
        return value.rstrip("/")

    def close(self) -> None:
        """Close the shared HTTP clients."""
        self._clients.close()

    # -- queueing (in the caller's transaction) ----------------------------------------------

    def on_change(
        self,
        session: Session,
        tenant: str,
        stored: StoredResource,
        previous: StoredResource | None,
    ) -> None:
        """A ChangeListener of the FHIR store: queue the events ``stored`` raises (module
        docstring), in the caller's transaction."""
        if stored.resource_type == "Subscription":
            return
        self.subscriptions.on_change(session, tenant, stored)
        self.epd.on_change(session, tenant, stored, previous)
        self.webhook.on_change(session, tenant, stored, previous)
        session.flush()

    def subscription_created(self, session: Session, tenant: str, stored: StoredResource) -> None:
        """A client created or updated a Subscription (:meth:`SubscriptionChannel.created`)."""
        self.subscriptions.created(session, tenant, stored)

    def subscription_removed(self, session: Session, tenant: str, subscription_id: str) -> None:
        """A client deleted a Subscription: its state and queued notifications go with it."""
        self.subscriptions.removed(session, tenant, subscription_id)

    def status_bundle(self, tenant: str, subscription_id: str) -> Resource:
        """``GET [base]/Subscription/{id}/$status`` (:meth:`SubscriptionChannel.status_bundle`)."""
        return self.subscriptions.status_bundle(tenant, subscription_id)

    # -- working it off -------------------------------------------------------------------

    def tick(self) -> int:
        """Queue due heartbeats, then send the head of every due queue, round after round
        (at most :data:`MAX_ROUNDS`), until nothing is due. Returns the rows sent."""
        self.subscriptions.queue_heartbeats()
        sent = 0
        for _ in range(MAX_ROUNDS):
            claims = self._claim()
            if not claims:
                break
            run_each(self._work, claims, workers=self.workers)
            sent += len(claims)
        return sent

    def _claim(self) -> list[Message]:
        """Claim the due head of each queue (module docstring)."""
        # Only the head of each queue (its oldest open row) may go: a long backlog behind a
        # head that waits for its backoff must not crowd other queues out of the batch.
        other = aliased(FhirOutbox)
        head = (
            select(func.min(other.pk))
            .where(
                col(other.tenant) == col(FhirOutbox.tenant),
                col(other.channel) == col(FhirOutbox.channel),
                or_(
                    col(other.subscription_id) == col(FhirOutbox.subscription_id),
                    and_(
                        col(other.subscription_id).is_(None),
                        col(FhirOutbox.subscription_id).is_(None),
                    ),
                ),
                col(other.state).in_(OPEN),
            )
            .scalar_subquery()
        )
        return self.outbox.claim(
            self.clock(),
            _message_of,
            limit=self.batch_size,
            where=[col(FhirOutbox.pk) == head],
            order_by=[col(FhirOutbox.pk)],
            taken_over=_taken_over,
        )

    def _work(self, message: Message) -> None:
        failure: DeliveryFailed | None = None
        try:
            if message.channel == SUBSCRIPTION:
                self.subscriptions.send(message)
            elif message.channel == WEBHOOK:
                self.webhook.send(message)
            else:
                self.epd.send(message)
        except DeliveryFailed as exc:
            failure = exc
        except HubError as exc:  # e.g. a stored Subscription that no longer parses
            failure = DeliveryFailed(exc.reason, retryable=False)
        except Exception as exc:  # a bug or a broken store: recorded, retried later
            log.exception("FHIR outbox %d failed", message.pk)
            failure = DeliveryFailed(f"internal error: {type(exc).__name__}: {exc}", retryable=True)
        self._record(message, failure)
        self._audit(message, failure)

    def _audit(self, message: Message, failure: DeliveryFailed | None) -> None:
        """Tell the audit trail (:class:`NotifyAudit`) about an attempt that sent a resource
        out (EPD push, webhook call, event notification)."""
        exported = message.channel in (EPD_PUSH, WEBHOOK) or message.kind == EVENT
        if self.audit is None or not exported:
            return
        focus = (
            (message.focus_type, message.focus_id)
            if message.focus_type and message.focus_id
            else None
        )
        try:
            self.audit(
                message.tenant,
                message.channel,
                message.subscription_id,
                focus,
                failure.reason if failure is not None else None,
                failure.retryable if failure is not None else False,
            )
        except Exception:  # the audit trail counts its own failures; notifying goes on
            log.exception("FHIR outbox %d: audit record failed", message.pk)

    def _record(self, message: Message, failure: DeliveryFailed | None) -> None:
        now = self.clock()
        with self.db.write() as session:
            row = self.outbox.lock(session, message.pk)
            if row is None or not self.outbox.owns(row, message.attempt, message.lease_until):
                log.warning("FHIR outbox %d: taken over by another process", message.pk)
                return
            what = (
                self.subscriptions.describe(message)
                if message.channel == SUBSCRIPTION
                else self.webhook.describe(message)
                if message.channel == WEBHOOK
                else self.epd.describe(message)
            )
            if failure is None:
                self.outbox.settle(row, now, None)
                row.delivered_at = now
                log.info("FHIR outbox %d: %s delivered", message.pk, what)
                if message.channel == SUBSCRIPTION:
                    self.subscriptions.succeeded(session, message, now)
                return
            error = f"attempt {row.attempts}: {failure.reason}"
            self.outbox.settle(row, now, Failure(error, failure.retryable))
            log.warning("FHIR outbox %d (%s): %s", message.pk, what, row.last_error)
            if message.channel == SUBSCRIPTION:
                self.subscriptions.failed(session, message, failure.reason)


def _message_of(row: FhirOutbox, lease_until: datetime) -> Message:
    assert row.pk is not None
    return Message(
        pk=row.pk,
        tenant=row.tenant,
        channel=row.channel,
        subscription_id=row.subscription_id,
        kind=row.kind,
        event_number=row.event_number,
        focus_type=row.focus_type,
        focus_id=row.focus_id,
        created_at=as_utc(row.created_at),
        attempt=row.attempts,
        lease_until=lease_until,
    )


def _taken_over(row: FhirOutbox) -> None:
    log.warning("FHIR outbox %d: lease expired; taken over", row.pk)


async def run_fhir_notify_loop(notifier: FhirNotifier, poll_seconds: float) -> None:
    """:meth:`FhirNotifier.tick` as an outbox loop
    (:func:`aifi.hub.persistence.outbox.run_outbox_loop`); the shared HTTP clients are closed when
    the loop ends."""
    try:
        await run_outbox_loop(notifier, poll_seconds, "FHIR notification")
    finally:
        notifier.close()


__all__ = [
    "DELIVERED",
    "EPD_PUSH",
    "FAILED",
    "PENDING",
    "SENDING",
    "SUBSCRIPTION",
    "WEBHOOK",
    "FhirNotifier",
    "Matcher",
    "NotifyAudit",
    "ResourceStore",
    "run_fhir_notify_loop",
]
