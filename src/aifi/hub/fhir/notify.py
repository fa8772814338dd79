"""FHIR notifications out of the hub: rest-hook Subscriptions (HL7 Subscriptions R5 Backport
IG for R4, :mod:`aifi.fhir.subscriptions`) and the push of final DiagnosticReports to each
hospital's EPD (:mod:`aifi.fhir.epd_client`). A durable outbox (``fhir_outbox``) worked like
the PACS outbox of :mod:`aifi.hub.delivery.deliverer`.

**Queueing** (in the transaction that changes the resource, so nothing is lost by a restart):

- :meth:`FhirNotifier.on_change` is a ChangeListener of the FHIR store. For each of the
  tenant's Subscriptions that is ``active`` (or ``error`` after a successful handshake: still
  wanted, its endpoint failing) and whose criteria search matches the new version, the
  subscription's ``events_since_start`` grows by one and an ``event-notification`` row with
  that event number is added (IG "Notifications": event numbers count from 1, per
  subscription, without gaps). For a tenant with an EPD URL, a DiagnosticReport that
  *becomes* ``final`` adds one ``epd-push`` row.
- :meth:`FhirNotifier.subscription_created` (create, or a client's update) keeps the state
  row and queues a ``handshake`` (IG "Handshake": the server confirms the endpoint before
  sending events; status ``requested`` until then). An update of a Subscription in
  ``error`` queues a new handshake (a client that fixed its endpoint gets a fresh start);
  ``off`` drops what is still queued. :meth:`FhirNotifier.subscription_removed` drops the
  state and the queue.
- A ``heartbeat`` row is queued when a subscription asks for heartbeats
  (``backport-heartbeat-period``), is ``active``, has nothing queued, and nothing was sent
  to it for that long.

**Working it off** (:meth:`FhirNotifier.tick`, run by :func:`run_fhir_notify_loop`). Rows form
queues: one per subscription, one per tenant's EPD. Only the *head* of a queue (its oldest
row not yet delivered or failed) is sent, so event N+1 never overtakes event N (IG
"Notifications": a subscriber detects missing events by their numbers and should not see
them out of order), and an EPD that is down costs one timeout per backoff step, however
many reports wait. As in delivery.py, a row is *claimed* in a short write transaction
(``sending``, attempt + 1, a lease; PostgreSQL ``FOR UPDATE SKIP LOCKED``), *sent* outside
any transaction, and the outcome *recorded* if the row is still this process's:

- success → ``delivered``. A subscription becomes ``active`` again (its ``error`` text
  removed) — written with the store, so ``meta.versionId`` grows and a client GET sees it.
- failure → ``pending`` with exponential backoff (``backoff_seconds · 2^(attempts-1)``, at
  most ``max_backoff_seconds``) and ``last_error``; ``failed`` after ``max_attempts`` or at
  once when not retryable (an HTTP status other than 408/429/503/504, or a subscription
  that is gone/off). A subscription is set to ``error`` with ``Subscription.error`` naming
  the reason from its first failure on (IG "Subscription status": ``error`` while
  notifications fail, ``active`` after the next success). A failed event row is given up:
  the queue goes on with the next event, whose number shows the subscriber the gap
  (IG "Handling errors": the subscriber may recover with a query). A handshake that
  fails for good leaves the subscription ``error`` with no events queued for it.

The focus resources are read at send time: the store keeps current versions only, so a
``full-resource`` notification carries the resource as it is then (its later changes follow
as their own events); the EPD push re-reads the report and its Observations the same way.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from sqlalchemy import and_, delete, event, func, or_
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from aifi.dicomweb.worklist import Doorbell
from aifi.errors import HubError, NotFound
from aifi.fhir.epd_client import DeliveryFailed, post_bundle, report_transaction
from aifi.fhir.subscriptions import (
    NotificationKind,
    SubscriptionSpec,
    notification_bundle,
    parse_subscription,
    resource_url,
    status_parameters,
    status_searchset,
)
from aifi.fhir.types import Resource, StoredResource
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import retry_delay, run_outbox_loop
from aifi.hub.persistence.tables import FhirOutbox, FhirResource, FhirSubscriptionState

log = logging.getLogger(__name__)

SUBSCRIPTION = "subscription"
EPD_PUSH = "epd-push"
HANDSHAKE = "handshake"
HEARTBEAT = "heartbeat"
EVENT = "event-notification"
PUSH = "push"

PENDING = "pending"
SENDING = "sending"
DELIVERED = "delivered"
FAILED = "failed"
OPEN = (PENDING, SENDING)

CLAIM_BATCH = 32
MAX_ROUNDS = 20
"""Rounds per tick: each round sends the head of every queue that is due."""
_ERROR_CHARS = 2000

Matcher = Callable[[Session, str, str, StoredResource], bool]
"""``(session, tenant, criteria, stored) -> bool``: does the new version match the criteria?"""


class ResourceStore(Protocol):
    """What the notifier uses of ``aifi.hub.fhir.store.SqlFhirStore``."""

    def get(
        self, session: Session, tenant: str, resource_type: str, resource_id: str
    ) -> StoredResource | None: ...

    def put(
        self, session: Session, tenant: str, resource: Resource, *, workitem_uid: str | None = None
    ) -> StoredResource | None: ...


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive date-times; they were written in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class _Claim:
    pk: int
    tenant: str
    channel: str
    subscription_id: str | None
    kind: str
    event_number: int | None
    focus_type: str | None
    focus_id: str | None
    created_at: datetime
    attempt: int
    lease_until: datetime


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
        matcher: Matcher,
        clock: Callable[[], datetime] = _now,
        max_attempts: int = 10,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 300.0,
        timeout_seconds: float = 10.0,
        lease_seconds: float = 60.0,
        workers: int = 8,
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
        self.push_targets = dict(push_targets or {})
        self.matcher = matcher
        self.clock = clock
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.lease_seconds = lease_seconds
        self.workers = workers
        self.batch_size = CLAIM_BATCH
        self.doorbell = Doorbell()
        """Rung after a transaction that queued rows commits (:func:`run_fhir_notify_loop`)."""
        self._clients: dict[str, httpx.Client] = {}
        self._clients_lock = threading.Lock()
        self.audit: (
            Callable[[str, str, str | None, tuple[str, str] | None, str | None, bool], None] | None
        ) = None
        """``(tenant, channel, subscription id, focus (type, id), error, retryable)`` after
        each attempt to send a resource: the audit trail's hook (issue 6,
        :func:`aifi.hub.audit.trail.install`)."""

    @property
    def base_url(self) -> str:
        """The hub's public FHIR base (``…/fhir``), as notifications name resources."""
        value = self._base_url() if callable(self._base_url) else self._base_url
        return value.rstrip("/")

    def close(self) -> None:
        """Close the shared HTTP clients."""
        with self._clients_lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()

    def _client(self, url: str) -> httpx.Client:
        """One shared client per upstream (scheme, host, port)."""
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._clients_lock:
            client = self._clients.get(origin)
            if client is None:
                client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout_seconds),
                    follow_redirects=False,
                    limits=httpx.Limits(max_connections=self.workers),
                )
                self._clients[origin] = client
            return client

    # -- queueing (in the caller's transaction) ----------------------------------------------

    def _ring_after_commit(self, session: Session) -> None:
        if not session.info.get("fhir_notify_bell"):
            session.info["fhir_notify_bell"] = True
            event.listen(session, "after_commit", self._ring, once=True)

    def _ring(self, session: Session) -> None:
        session.info.pop("fhir_notify_bell", None)
        self.doorbell.ring()

    def _state(
        self, session: Session, tenant: str, subscription_id: str
    ) -> FhirSubscriptionState | None:
        stmt = select(FhirSubscriptionState).where(
            col(FhirSubscriptionState.tenant) == tenant,
            col(FhirSubscriptionState.subscription_id) == subscription_id,
        )
        if not self.db.is_sqlite:
            stmt = stmt.with_for_update()
        return session.exec(stmt).first()

    def _has_open(
        self, session: Session, tenant: str, subscription_id: str, kind: str | None
    ) -> bool:
        where = [
            col(FhirOutbox.tenant) == tenant,
            col(FhirOutbox.channel) == SUBSCRIPTION,
            col(FhirOutbox.subscription_id) == subscription_id,
            col(FhirOutbox.state).in_(OPEN),
        ]
        if kind is not None:
            where.append(col(FhirOutbox.kind) == kind)
        return session.exec(select(FhirOutbox.pk).where(*where).limit(1)).first() is not None

    def _handshake_done(self, session: Session, tenant: str, subscription_id: str) -> bool:
        return (
            session.exec(
                select(FhirOutbox.pk)
                .where(
                    col(FhirOutbox.tenant) == tenant,
                    col(FhirOutbox.channel) == SUBSCRIPTION,
                    col(FhirOutbox.subscription_id) == subscription_id,
                    col(FhirOutbox.kind) == HANDSHAKE,
                    col(FhirOutbox.state) == DELIVERED,
                )
                .limit(1)
            ).first()
            is not None
        )

    def _queue(
        self, session: Session, tenant: str, channel: str, kind: str, **fields: Any
    ) -> FhirOutbox:
        now = self.clock()
        row = FhirOutbox(
            tenant=tenant,
            channel=channel,
            kind=kind,
            state=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            **fields,
        )
        session.add(row)
        self._ring_after_commit(session)
        return row

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
        for subscription_id, spec in self._listening(session, tenant):
            if spec.resource_type != stored.resource_type:
                continue
            if not self.matcher(session, tenant, spec.criteria, stored):
                continue
            state = self._state(session, tenant, subscription_id)
            if state is None:
                continue
            state.events_since_start += 1
            session.add(state)
            self._queue(
                session,
                tenant,
                SUBSCRIPTION,
                EVENT,
                subscription_id=subscription_id,
                event_number=state.events_since_start,
                focus_type=stored.resource_type,
                focus_id=stored.resource_id,
                focus_version=stored.version_id,
            )
        if (
            tenant in self.push_targets
            and stored.resource_type == "DiagnosticReport"
            and stored.content.get("status") == "final"
            and (previous is None or previous.content.get("status") != "final")
        ):
            self._queue(
                session,
                tenant,
                EPD_PUSH,
                PUSH,
                focus_type=stored.resource_type,
                focus_id=stored.resource_id,
                focus_version=stored.version_id,
            )
        session.flush()

    def _listening(self, session: Session, tenant: str) -> list[tuple[str, SubscriptionSpec]]:
        """The tenant's Subscriptions that receive events: ``active``, or ``error`` after a
        handshake that succeeded."""
        rows = session.exec(
            select(FhirResource.resource_id, FhirResource.content).where(
                col(FhirResource.tenant) == tenant,
                col(FhirResource.resource_type) == "Subscription",
            )
        ).all()
        listening = []
        for resource_id, content in rows:
            resource = json.loads(content)
            status = resource.get("status")
            if status not in ("active", "error"):
                continue
            if status == "error" and not self._handshake_done(session, tenant, resource_id):
                continue
            try:
                spec = parse_subscription(resource)
            except HubError as exc:
                log.warning("Subscription/%s of %r is not usable: %s", resource_id, tenant, exc)
                continue
            listening.append((resource_id, spec))
        return listening

    def subscription_created(self, session: Session, tenant: str, stored: StoredResource) -> None:
        """A client created or updated a Subscription (already checked with
        ``parse_subscription``): keep its state row and queue the handshake (module
        docstring). In the caller's transaction."""
        spec = parse_subscription(stored.content)
        subscription_id = stored.resource_id
        state = self._state(session, tenant, subscription_id)
        new = state is None
        if state is None:
            state = FhirSubscriptionState(
                tenant=tenant,
                subscription_id=subscription_id,
                events_since_start=0,
                created_at=self.clock(),
            )
        state.heartbeat_seconds = spec.heartbeat_seconds
        if spec.heartbeat_seconds is None:
            state.next_heartbeat_at = None
        elif state.next_heartbeat_at is None and spec.status == "active":
            state.next_heartbeat_at = self.clock() + timedelta(seconds=spec.heartbeat_seconds)
        session.add(state)
        if spec.status == "off":
            self._drop_open(session, tenant, subscription_id)
            session.flush()
            return
        if new or spec.status in ("requested", "error"):
            if spec.status != "requested":
                self._set_status(session, tenant, stored, "requested", None)
            if not self._has_open(session, tenant, subscription_id, HANDSHAKE):
                self._queue(
                    session, tenant, SUBSCRIPTION, HANDSHAKE, subscription_id=subscription_id
                )
        session.flush()

    def subscription_removed(self, session: Session, tenant: str, subscription_id: str) -> None:
        """A client deleted a Subscription: its state and queued notifications go with it."""
        self._drop_open(session, tenant, subscription_id)
        session.exec(
            delete(FhirSubscriptionState).where(
                col(FhirSubscriptionState.tenant) == tenant,
                col(FhirSubscriptionState.subscription_id) == subscription_id,
            )
        )

    def _drop_open(self, session: Session, tenant: str, subscription_id: str) -> None:
        session.exec(
            delete(FhirOutbox).where(
                col(FhirOutbox.tenant) == tenant,
                col(FhirOutbox.channel) == SUBSCRIPTION,
                col(FhirOutbox.subscription_id) == subscription_id,
                col(FhirOutbox.state).in_(OPEN),
            )
        )

    def _set_status(
        self,
        session: Session,
        tenant: str,
        current: StoredResource,
        status: str,
        error: str | None,
    ) -> None:
        """Write the Subscription's ``status``/``error`` through the store (a new version,
        visible to GET); nothing when they are already so."""
        content = dict(current.content)
        if content.get("status") == status and content.get("error") == error:
            return
        content["status"] = status
        if error:
            content["error"] = error[:_ERROR_CHARS]
        else:
            content.pop("error", None)
        meta = {
            k: v
            for k, v in (content.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")
        }
        if meta:
            content["meta"] = meta
        else:
            content.pop("meta", None)
        self.store.put(session, tenant, content)

    # -- $status ----------------------------------------------------------------------------

    def status_bundle(self, tenant: str, subscription_id: str) -> Resource:
        """``GET [base]/Subscription/{id}/$status`` (IG
        ``OperationDefinition-backport-subscription-status``): a searchset Bundle with the status
        Parameters (type ``query-status``). NotFound when
        the tenant has no such Subscription."""
        with self.db.read() as session:
            current = self.store.get(session, tenant, "Subscription", subscription_id)
            state = session.exec(
                select(FhirSubscriptionState).where(
                    col(FhirSubscriptionState.tenant) == tenant,
                    col(FhirSubscriptionState.subscription_id) == subscription_id,
                )
            ).first()
        if current is None:
            raise NotFound(f"Subscription/{subscription_id} does not exist")
        content = current.content
        criteria = str(content.get("criteria") or "")
        base = self.base_url
        ref = resource_url(base, "Subscription", subscription_id)
        error = content.get("error") or (state.last_error if state is not None else None)
        status = status_parameters(
            subscription_ref=ref,
            criteria=criteria,
            status=str(content.get("status") or "requested"),
            kind="query-status",
            events_since_start=state.events_since_start if state is not None else 0,
            base_url=base,
            error=str(error) if error else None,
        )
        return status_searchset(status, self_url=f"{ref}/$status")

    # -- working it off -------------------------------------------------------------------

    def tick(self) -> int:
        """Queue due heartbeats, then send the head of every due queue, round after round
        (at most :data:`MAX_ROUNDS`), until nothing is due. Returns the rows sent."""
        self._queue_heartbeats()
        sent = 0
        for _ in range(MAX_ROUNDS):
            claims = self._claim()
            if not claims:
                break
            if len(claims) == 1:
                self._work(claims[0])
            else:
                with ThreadPoolExecutor(max_workers=min(self.workers, len(claims))) as pool:
                    list(pool.map(self._work, claims))
            sent += len(claims)
        return sent

    def _queue_heartbeats(self) -> None:
        now = self.clock()
        with self.db.write() as session:
            states = session.exec(
                select(FhirSubscriptionState).where(
                    col(FhirSubscriptionState.heartbeat_seconds).is_not(None),
                    col(FhirSubscriptionState.next_heartbeat_at) <= now,
                )
            ).all()
            for state in states:
                assert state.heartbeat_seconds is not None
                state.next_heartbeat_at = now + timedelta(seconds=state.heartbeat_seconds)
                session.add(state)
                if self._has_open(session, state.tenant, state.subscription_id, None):
                    continue
                current = self.store.get(
                    session, state.tenant, "Subscription", state.subscription_id
                )
                if current is None or current.content.get("status") != "active":
                    continue
                self._queue(
                    session,
                    state.tenant,
                    SUBSCRIPTION,
                    HEARTBEAT,
                    subscription_id=state.subscription_id,
                )

    def _claim(self) -> list[_Claim]:
        """Claim the due head of each queue (module docstring)."""
        now = self.clock()
        lease_until = now + timedelta(seconds=self.lease_seconds)
        due = or_(
            and_(col(FhirOutbox.state) == PENDING, col(FhirOutbox.next_attempt_at) <= now),
            and_(col(FhirOutbox.state) == SENDING, col(FhirOutbox.lease_until) < now),
        )
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
        stmt = (
            select(FhirOutbox)
            .where(due, col(FhirOutbox.pk) == head)
            .order_by(col(FhirOutbox.pk))
            .limit(self.batch_size)
        )
        if not self.db.is_sqlite:
            stmt = stmt.with_for_update(skip_locked=True)
        claims: list[_Claim] = []
        with self.db.write() as session:
            for row in session.exec(stmt).all():
                assert row.pk is not None
                if row.state == SENDING:
                    log.warning("FHIR outbox %d: lease expired; taken over", row.pk)
                row.state = SENDING
                row.attempts += 1
                row.lease_until = lease_until
                session.add(row)
                claims.append(
                    _Claim(
                        pk=row.pk,
                        tenant=row.tenant,
                        channel=row.channel,
                        subscription_id=row.subscription_id,
                        kind=row.kind,
                        event_number=row.event_number,
                        focus_type=row.focus_type,
                        focus_id=row.focus_id,
                        created_at=_utc(row.created_at),
                        attempt=row.attempts,
                        lease_until=lease_until,
                    )
                )
        return claims

    def _work(self, claim: _Claim) -> None:
        failure: DeliveryFailed | None = None
        try:
            if claim.channel == SUBSCRIPTION:
                self._notify(claim)
            else:
                self._push(claim)
        except DeliveryFailed as exc:
            failure = exc
        except HubError as exc:  # e.g. a stored Subscription that no longer parses
            failure = DeliveryFailed(exc.reason, retryable=False)
        except Exception as exc:  # a bug or a broken store: recorded, retried later
            log.exception("FHIR outbox %d failed", claim.pk)
            failure = DeliveryFailed(f"internal error: {type(exc).__name__}: {exc}", retryable=True)
        self._record(claim, failure)
        self._audit(claim, failure)

    def _audit(self, claim: _Claim, failure: DeliveryFailed | None) -> None:
        """Tell the audit trail (issue 6, :mod:`aifi.hub.audit.trail`) about an attempt that sent
        a resource out (EPD push, event notification): DCM 110106 Export, PS3.15 A.5.3.6."""
        if self.audit is None or (claim.channel != EPD_PUSH and claim.kind != EVENT):
            return
        focus = (claim.focus_type, claim.focus_id) if claim.focus_type and claim.focus_id else None
        try:
            self.audit(
                claim.tenant,
                claim.channel,
                claim.subscription_id,
                focus,
                failure.reason if failure is not None else None,
                failure.retryable if failure is not None else False,
            )
        except Exception:  # the audit trail counts its own failures; notifying goes on
            log.exception("FHIR outbox %d: audit record failed", claim.pk)

    def _notify(self, claim: _Claim) -> None:
        """Send one subscription notification."""
        assert claim.subscription_id is not None
        with self.db.read() as session:
            current = self.store.get(session, claim.tenant, "Subscription", claim.subscription_id)
            state = session.exec(
                select(FhirSubscriptionState).where(
                    col(FhirSubscriptionState.tenant) == claim.tenant,
                    col(FhirSubscriptionState.subscription_id) == claim.subscription_id,
                )
            ).first()
            focus = (
                self.store.get(session, claim.tenant, claim.focus_type, claim.focus_id)
                if claim.focus_type and claim.focus_id
                else None
            )
        if current is None or state is None:
            raise DeliveryFailed(
                f"Subscription/{claim.subscription_id} no longer exists", retryable=False
            )
        spec = parse_subscription(current.content)
        if spec.status == "off":
            raise DeliveryFailed(f"Subscription/{claim.subscription_id} is off", retryable=False)
        events = []
        if claim.kind == EVENT:
            if focus is None:  # not expected: only Subscriptions are ever deleted
                focus = StoredResource(
                    resource_type=str(claim.focus_type),
                    resource_id=str(claim.focus_id),
                    version_id=1,
                    last_updated=claim.created_at,
                    content={"resourceType": claim.focus_type, "id": claim.focus_id},
                )
            events.append((claim.event_number or 0, claim.created_at, focus))
        base = self.base_url
        kind: NotificationKind = (
            "handshake"
            if claim.kind == HANDSHAKE
            else "heartbeat"
            if claim.kind == HEARTBEAT
            else "event-notification"
        )
        bundle = notification_bundle(
            subscription_ref=resource_url(base, "Subscription", claim.subscription_id),
            criteria=spec.criteria,
            status=spec.status,
            kind=kind,
            events_since_start=state.events_since_start,
            events=events,
            content=spec.content,
            base_url=base,
            timestamp=self.clock(),
        )
        timeout = self.timeout_seconds
        if spec.timeout_seconds:
            timeout = min(timeout, float(spec.timeout_seconds))
        post_bundle(
            self._client(spec.endpoint),
            spec.endpoint,
            bundle,
            dict(spec.headers),
            timeout=timeout,
        )

    def _push(self, claim: _Claim) -> None:
        """POST the report with its Observations to the tenant's EPD (module docstring)."""
        url = self.push_targets.get(claim.tenant)
        if not url:
            raise DeliveryFailed(
                f"no EPD is configured for tenant {claim.tenant!r}", retryable=False
            )
        with self.db.read() as session:
            report = self.store.get(session, claim.tenant, "DiagnosticReport", str(claim.focus_id))
            observations = []
            if report is not None:
                for ref in report.content.get("result") or []:
                    target = str((ref or {}).get("reference") or "")
                    kind, _, obs_id = target.rpartition("/")
                    if kind.rsplit("/", 1)[-1] != "Observation" or not obs_id:
                        continue
                    found = self.store.get(session, claim.tenant, "Observation", obs_id)
                    if found is not None:
                        observations.append(found.content)
        if report is None:
            raise DeliveryFailed(
                f"DiagnosticReport/{claim.focus_id} no longer exists", retryable=False
            )
        try:
            bundle = report_transaction(report.content, observations)
        except ValueError as exc:
            raise DeliveryFailed(str(exc), retryable=False) from exc
        post_bundle(self._client(url), url.rstrip("/"), bundle)

    def _record(self, claim: _Claim, failure: DeliveryFailed | None) -> None:
        now = self.clock()
        with self.db.write() as session:
            row = session.get(FhirOutbox, claim.pk, with_for_update=not self.db.is_sqlite)
            if (
                row is None
                or row.state != SENDING
                or row.attempts != claim.attempt
                or row.lease_until is None
                or _utc(row.lease_until) != claim.lease_until
            ):
                log.warning("FHIR outbox %d: taken over by another process", claim.pk)
                return
            row.lease_until = None
            what = self._describe(claim)
            if failure is None:
                row.state = DELIVERED
                row.delivered_at = now
                row.last_error = None
                session.add(row)
                log.info("FHIR outbox %d: %s delivered", claim.pk, what)
                if claim.channel == SUBSCRIPTION:
                    self._succeeded(session, claim, now)
                return
            if not failure.retryable:
                row.state = FAILED
                row.last_error = f"attempt {row.attempts}: {failure.reason}; refused, not retried"
            elif row.attempts >= self.max_attempts:
                row.state = FAILED
                row.last_error = (
                    f"attempt {row.attempts}: {failure.reason}; "
                    f"gave up after {row.attempts} attempts"
                )
            else:
                delay = retry_delay(row.attempts, self.backoff_seconds, self.max_backoff_seconds)
                row.state = PENDING
                row.next_attempt_at = now + timedelta(seconds=delay)
                row.last_error = (
                    f"attempt {row.attempts}: {failure.reason}; "
                    f"retry at {row.next_attempt_at.isoformat(timespec='seconds')}"
                )
            row.last_error = row.last_error[:_ERROR_CHARS]
            session.add(row)
            log.warning("FHIR outbox %d (%s): %s", claim.pk, what, row.last_error)
            if claim.channel == SUBSCRIPTION:
                self._failed(session, claim, failure.reason)

    def _describe(self, claim: _Claim) -> str:
        if claim.channel == EPD_PUSH:
            target = self.push_targets.get(claim.tenant, "(no EPD configured)")
            return f"push of DiagnosticReport/{claim.focus_id} to {target}"
        number = f" {claim.event_number}" if claim.event_number is not None else ""
        return f"{claim.kind}{number} of Subscription/{claim.subscription_id}"

    def _succeeded(self, session: Session, claim: _Claim, now: datetime) -> None:
        assert claim.subscription_id is not None
        state = self._state(session, claim.tenant, claim.subscription_id)
        if state is not None:
            state.consecutive_failures = 0
            state.last_error = None
            if state.heartbeat_seconds:
                state.next_heartbeat_at = now + timedelta(seconds=state.heartbeat_seconds)
            session.add(state)
        current = self.store.get(session, claim.tenant, "Subscription", claim.subscription_id)
        if current is not None and current.content.get("status") in ("requested", "error"):
            self._set_status(session, claim.tenant, current, "active", None)

    def _failed(self, session: Session, claim: _Claim, reason: str) -> None:
        assert claim.subscription_id is not None
        state = self._state(session, claim.tenant, claim.subscription_id)
        if state is not None:
            state.consecutive_failures += 1
            state.last_error = reason[:_ERROR_CHARS]
            session.add(state)
        current = self.store.get(session, claim.tenant, "Subscription", claim.subscription_id)
        if current is not None and current.content.get("status") in (
            "requested",
            "active",
            "error",
        ):
            self._set_status(
                session, claim.tenant, current, "error", f"{claim.kind} failed: {reason}"
            )


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
    "FhirNotifier",
    "Matcher",
    "ResourceStore",
    "run_fhir_notify_loop",
]
