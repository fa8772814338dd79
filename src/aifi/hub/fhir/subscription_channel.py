"""FHIR rest-hook Subscriptions out of the hub (HL7 Subscriptions R5 Backport IG for R4,
:mod:`aifi.fhir.subscriptions`), one channel of the FHIR outbox (:mod:`aifi.hub.fhir.notify`
works it off): what is queued for a subscription, how one notification is sent, and what
its outcome does to the Subscription's status.

**Queueing** (in the transaction that changes the resource, so nothing is lost by a restart):

- :meth:`SubscriptionChannel.on_change`: for each of the tenant's Subscriptions that is
  ``active`` (or ``error`` after a successful handshake: still wanted, its endpoint failing)
  and whose criteria search matches the new version, the subscription's
  ``events_since_start`` grows by one and an ``event-notification`` row with that event
  number is added (IG "Notifications": event numbers count from 1, per subscription,
  without gaps).
- :meth:`SubscriptionChannel.created` (create, or a client's update) keeps the state row and
  queues a ``handshake`` (IG "Handshake": the server confirms the endpoint before sending
  events; status ``requested`` until then). An update of a Subscription in ``error`` queues
  a new handshake (a client that fixed its endpoint gets a fresh start); ``off`` drops what
  is still queued. :meth:`SubscriptionChannel.removed` drops the state and the queue.
- :meth:`SubscriptionChannel.queue_heartbeats`: a ``heartbeat`` row when a subscription asks
  for heartbeats (``backport-heartbeat-period``), is ``active``, has nothing queued, and
  nothing was sent to it for that long.

**Outcome.** Success makes a subscription ``active`` again (its ``error`` text removed) —
written with the store, so ``meta.versionId`` grows and a client GET sees it. A failure sets
it to ``error`` with ``Subscription.error`` naming the reason from its first failure on (IG
"Subscription status": ``error`` while notifications fail, ``active`` after the next
success). A failed event row is given up: the queue goes on with the next event, whose
number shows the subscriber the gap (IG "Handling errors": the subscriber may recover with
a query). A handshake that fails for good leaves the subscription ``error`` with no events
queued for it.

The focus resource is read at send time: the store keeps current versions only, so a
``full-resource`` notification carries the resource as it is then (its later changes follow
as their own events).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete
from sqlmodel import Session, col, select

from aifi.clock import Clock
from aifi.errors import HubError, NotFound
from aifi.fhir.epd_client import DeliveryFailed, post_bundle
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
from aifi.hub.fhir.messages import (
    DELIVERED,
    ERROR_CHARS,
    EVENT,
    HANDSHAKE,
    HEARTBEAT,
    OPEN,
    SUBSCRIPTION,
    Matcher,
    Message,
    ResourceStore,
    queue,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import Outbox
from aifi.hub.persistence.tables import FhirOutbox, FhirResource, FhirSubscriptionState

log = logging.getLogger("aifi.hub.fhir.notify")


class SubscriptionChannel:
    """Queues and sends the ``subscription`` rows of the FHIR outbox (module docstring)."""

    def __init__(
        self,
        db: Database,
        store: ResourceStore,
        outbox: Outbox[FhirOutbox],
        *,
        matcher: Matcher,
        base_url: Callable[[], str],
        clock: Clock,
        client: Callable[[str], httpx.Client],
        timeout_seconds: float,
    ) -> None:
        self.db = db
        self.store = store
        self.outbox = outbox
        self.matcher = matcher
        self.base_url = base_url
        self.clock = clock
        self.client = client
        self.timeout_seconds = timeout_seconds

    # -- state and queue ----------------------------------------------------------------------

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

    def _queue(self, session: Session, tenant: str, kind: str, **fields: Any) -> None:
        queue(session, self.outbox, self.clock(), tenant, SUBSCRIPTION, kind, **fields)

    def _drop_open(self, session: Session, tenant: str, subscription_id: str) -> None:
        session.exec(
            delete(FhirOutbox).where(
                col(FhirOutbox.tenant) == tenant,
                col(FhirOutbox.channel) == SUBSCRIPTION,
                col(FhirOutbox.subscription_id) == subscription_id,
                col(FhirOutbox.state).in_(OPEN),
            )
        )

    # -- queueing (in the caller's transaction) -------------------------------------------------

    def on_change(self, session: Session, tenant: str, stored: StoredResource) -> None:
        """Queue an event for each listening Subscription whose criteria ``stored`` matches."""
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
                EVENT,
                subscription_id=subscription_id,
                event_number=state.events_since_start,
                focus_type=stored.resource_type,
                focus_id=stored.resource_id,
                focus_version=stored.version_id,
            )

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

    def created(self, session: Session, tenant: str, stored: StoredResource) -> None:
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
                self._queue(session, tenant, HANDSHAKE, subscription_id=subscription_id)
        session.flush()

    def removed(self, session: Session, tenant: str, subscription_id: str) -> None:
        """A client deleted a Subscription: its state and queued notifications go with it."""
        self._drop_open(session, tenant, subscription_id)
        session.exec(
            delete(FhirSubscriptionState).where(
                col(FhirSubscriptionState.tenant) == tenant,
                col(FhirSubscriptionState.subscription_id) == subscription_id,
            )
        )

    def queue_heartbeats(self) -> None:
        """Queue the heartbeats that are due (module docstring), in a transaction of its own."""
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
                self._queue(session, state.tenant, HEARTBEAT, subscription_id=state.subscription_id)

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
            content["error"] = error[:ERROR_CHARS]
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
        base = self.base_url()
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

    # -- sending and its outcome --------------------------------------------------------------

    def describe(self, message: Message) -> str:
        number = f" {message.event_number}" if message.event_number is not None else ""
        return f"{message.kind}{number} of Subscription/{message.subscription_id}"

    def send(self, message: Message) -> None:
        """Send one subscription notification; :class:`DeliveryFailed` when that does not
        work."""
        assert message.subscription_id is not None
        with self.db.read() as session:
            current = self.store.get(
                session, message.tenant, "Subscription", message.subscription_id
            )
            state = session.exec(
                select(FhirSubscriptionState).where(
                    col(FhirSubscriptionState.tenant) == message.tenant,
                    col(FhirSubscriptionState.subscription_id) == message.subscription_id,
                )
            ).first()
            focus = (
                self.store.get(session, message.tenant, message.focus_type, message.focus_id)
                if message.focus_type and message.focus_id
                else None
            )
        if current is None or state is None:
            raise DeliveryFailed(
                f"Subscription/{message.subscription_id} no longer exists", retryable=False
            )
        spec = parse_subscription(current.content)
        if spec.status == "off":
            raise DeliveryFailed(f"Subscription/{message.subscription_id} is off", retryable=False)
        events = []
        if message.kind == EVENT:
            if focus is None:  # not expected: only Subscriptions are ever deleted
                focus = StoredResource(
                    resource_type=str(message.focus_type),
                    resource_id=str(message.focus_id),
                    version_id=1,
                    last_updated=message.created_at,
                    content={"resourceType": message.focus_type, "id": message.focus_id},
                )
            events.append((message.event_number or 0, message.created_at, focus))
        base = self.base_url()
        kind: NotificationKind = (
            "handshake"
            if message.kind == HANDSHAKE
            else "heartbeat"
            if message.kind == HEARTBEAT
            else "event-notification"
        )
        bundle = notification_bundle(
            subscription_ref=resource_url(base, "Subscription", message.subscription_id),
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
            self.client(spec.endpoint),
            spec.endpoint,
            bundle,
            dict(spec.headers),
            timeout=timeout,
        )

    def succeeded(self, session: Session, message: Message, now: datetime) -> None:
        """A notification got through (in the transaction that records it)."""
        assert message.subscription_id is not None
        state = self._state(session, message.tenant, message.subscription_id)
        if state is not None:
            state.consecutive_failures = 0
            state.last_error = None
            if state.heartbeat_seconds:
                state.next_heartbeat_at = now + timedelta(seconds=state.heartbeat_seconds)
            session.add(state)
        current = self.store.get(session, message.tenant, "Subscription", message.subscription_id)
        if current is not None and current.content.get("status") in ("requested", "error"):
            self._set_status(session, message.tenant, current, "active", None)

    def failed(self, session: Session, message: Message, reason: str) -> None:
        """A notification did not get through (in the transaction that records it)."""
        assert message.subscription_id is not None
        state = self._state(session, message.tenant, message.subscription_id)
        if state is not None:
            state.consecutive_failures += 1
            state.last_error = reason[:ERROR_CHARS]
            session.add(state)
        current = self.store.get(session, message.tenant, "Subscription", message.subscription_id)
        if current is not None and current.content.get("status") in (
            "requested",
            "active",
            "error",
        ):
            self._set_status(
                session, message.tenant, current, "error", f"{message.kind} failed: {reason}"
            )


__all__ = ["SubscriptionChannel"]
