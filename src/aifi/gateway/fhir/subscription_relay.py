"""The worker side of the Subscriptions relayed to the EPD (:mod:`aifi.gateway.fhir.subscriptions`
holds the EPD's create/read/search/update/delete and says why the gateway subscribes by
pulling): :class:`SubscriptionRelay` follows each listening Subscription's criteria at the
hub, queues its events and heartbeats in ``gw_fhir_notification``, and sends the R4
Backport notifications (HL7 Subscriptions R5 Backport IG for R4, "Notifications",
"Handshake", "Heartbeats"; bundles from :mod:`aifi.fhir.subscriptions`) to the EPD's
rest-hook endpoints, re-identified.

Queues and outcomes are those of the hub's channel (:mod:`aifi.hub.fhir.subscription_channel`):
only the head of a subscription's queue is sent (event N+1 never overtakes event N); a row
is claimed with a lease, sent outside any transaction and recorded if still ours (the outbox
engine, :class:`aifi.hub.persistence.outbox.Outbox`); a failure is retried with backoff and
makes the subscription ``error`` (``Subscription.error`` names it) until the next success;
a row out of attempts is given up and the next event's number shows the gap (IG "Handling
errors"). A poll of the hub that fails makes it ``error`` with ``hub unreachable: …`` until
the hub answers again. An event whose resource cannot be re-identified is never sent (the
row fails with the reason).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl

import httpx
from sqlalchemy import func
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from aifi.clock import Clock, as_utc, utc_now
from aifi.dicomweb.worklist import Doorbell
from aifi.errors import AifiError, HubError
from aifi.fhir.epd_client import DeliveryFailed, post_bundle
from aifi.fhir.subscriptions import (
    NotificationKind,
    notification_bundle,
    parse_subscription,
    resource_url,
)
from aifi.fhir.types import StoredResource
from aifi.gateway.config import GatewayConfig
from aifi.gateway.fhir import addresses
from aifi.gateway.fhir.backend import SqlFhirIdentities
from aifi.gateway.fhir.changes import Change, ChangeFollower
from aifi.gateway.fhir.epd_push import EpdPusher
from aifi.gateway.fhir.hub_fhir import HubFhir
from aifi.gateway.fhir.subscriptions import (
    ERROR_CHARS,
    EVENT,
    HANDSHAKE,
    HEARTBEAT,
    OPEN,
    STATES,
    Translator,
    content_of,
    follow_name,
    new_notification,
    refresh_status,
)
from aifi.gateway.fhir.translate import FhirTranslator
from aifi.gateway.persistence.fhir_tables import RelayedSubscription, SubscriptionNotification
from aifi.gateway.settings import GatewaySettings
from aifi.hub.fhir.messages import Clients
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import Failure, Outbox, run_each
from aifi.oauth_client import ClientCredentials, Credentials

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    """One claimed ``gw_fhir_notification`` row: the fencing token is (attempt, lease)."""

    pk: int
    subscription_id: str
    kind: str
    event_number: int | None
    focus: str | None
    created_at: datetime
    attempt: int
    lease_until: datetime


def _claim_of(row: SubscriptionNotification, lease_until: datetime) -> Claim:
    assert row.pk is not None
    return Claim(
        row.pk,
        row.subscription_id,
        row.kind,
        row.event_number,
        row.focus,
        as_utc(row.created_at),
        row.attempts,
        lease_until,
    )


class SubscriptionRelay:
    """Follows each listening Subscription's criteria at the hub, queues its events and
    heartbeats, and sends the notifications (module docstring); an
    :class:`aifi.hub.persistence.outbox.OutboxWorker` of the gateway's worker process."""

    def __init__(
        self,
        db: Database,
        follower: ChangeFollower,
        translator: Translator,
        *,
        base_url: str | Callable[[], str],
        clock: Clock = utc_now,
        doorbell: Doorbell | None = None,
        backoff_seconds: float = 2.0,
        max_backoff_seconds: float = 300.0,
        max_attempts: int = 10,
        timeout_seconds: float = 10.0,
        workers: int = 4,
        on_close: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.follower = follower
        self.translator = translator
        self._base_url = base_url
        self.clock = clock
        self.workers = workers
        self.batch_size = 32
        self.timeout_seconds = timeout_seconds
        self.outbox = Outbox(
            db,
            SubscriptionNotification,
            STATES,
            lease_seconds=max(60.0, timeout_seconds * 3),
            backoff_seconds=backoff_seconds,
            max_backoff_seconds=max_backoff_seconds,
            max_attempts=max_attempts,
            error_chars=ERROR_CHARS,
            doorbell=doorbell,
        )
        self.doorbell = self.outbox.doorbell
        self._clients = Clients(timeout_seconds, workers)
        self._translating = threading.Lock()
        self._on_close = on_close

    @property
    def base_url(self) -> str:
        value = self._base_url() if callable(self._base_url) else self._base_url
        return value.rstrip("/")

    def close(self) -> None:
        """Close the endpoints' HTTP clients, then ``on_close`` (e.g. the worker's own
        client of the hub)."""
        self._clients.close()
        if self._on_close is not None:
            self._on_close()

    def tick(self) -> int:
        """One round: follow the hub, queue due heartbeats, send the head of each
        subscription's queue round after round. Returns the changes and rows worked on."""
        worked = self.follow()
        self.queue_heartbeats()
        for _ in range(20):
            claims = self._claim()
            if not claims:
                break
            run_each(self._work, claims, workers=self.workers, thread_name="gw-fhir-notify")
            worked += len(claims)
        return worked

    # -- following the hub ------------------------------------------------------------------

    def _listening(self) -> list[RelayedSubscription]:
        with self.db.read() as session:
            rows = session.exec(
                select(RelayedSubscription).where(col(RelayedSubscription.handshake_done))
            ).all()
        return [r for r in rows if content_of(r).get("status") in ("active", "error")]

    def follow(self) -> int:
        """Poll the hub for each listening Subscription (module docstring)."""
        taken = 0
        for row in self._listening():
            try:
                spec = parse_subscription(content_of(row))
            except HubError as exc:
                log.warning("Subscription/%s is not usable: %s", row.id, exc.reason)
                continue
            params = parse_qsl(spec.query, keep_blank_values=True)
            try:
                hub_params = self.translator.pseudonymise_query(spec.resource_type, params)
            except HubError as exc:  # checked at create; a translation that fails now
                log.warning("Subscription/%s criteria: %s", row.id, exc.reason)
                continue
            if hub_params is None:
                outcome_error: str | None = None  # names nothing known yet: nothing to see
            else:
                outcome = self.follower.poll(
                    follow_name(row.id),
                    spec.resource_type,
                    hub_params,
                    functools.partial(self._queue_events, subscription_id=row.id),
                )
                taken += outcome.changes
                outcome_error = outcome.error
            if (outcome_error or None) != row.hub_error:
                self._hub_outcome(row.id, outcome_error)
        return taken

    def _queue_events(
        self, session: Session, changes: Sequence[Change], *, subscription_id: str
    ) -> None:
        row = session.get(
            RelayedSubscription, subscription_id, with_for_update=not self.db.is_sqlite
        )
        if row is None:
            return
        for change in changes:
            row.events_since_start += 1
            session.add(
                SubscriptionNotification(
                    subscription_id=subscription_id,
                    kind=EVENT,
                    event_number=row.events_since_start,
                    focus=json.dumps(change.resource),
                    created_at=change.moment,
                    next_attempt_at=self.clock(),
                )
            )
        session.add(row)
        self.outbox.ring_after_commit(session)

    def _hub_outcome(self, subscription_id: str, error: str | None) -> None:
        with self.db.write() as session:
            row = session.get(RelayedSubscription, subscription_id)
            if row is None:
                return
            wanted = error[:ERROR_CHARS] if error else None
            if row.hub_error == wanted:
                return
            row.hub_error = wanted
            refresh_status(row, self.clock())
            session.add(row)

    def queue_heartbeats(self) -> None:
        """A ``heartbeat`` for each active Subscription that asks for them, has nothing
        queued and was sent nothing for its period."""
        now = self.clock()
        with self.db.write() as session:
            rows = session.exec(
                select(RelayedSubscription).where(
                    col(RelayedSubscription.handshake_done),
                    col(RelayedSubscription.heartbeat_seconds).is_not(None),
                )
            ).all()
            for row in rows:
                assert row.heartbeat_seconds is not None
                due = row.next_heartbeat_at
                if due is not None and as_utc(due) > now:
                    continue
                row.next_heartbeat_at = now + timedelta(seconds=row.heartbeat_seconds)
                session.add(row)
                if due is None or content_of(row).get("status") != "active":
                    continue
                if self._has_open(session, row.id):
                    continue
                session.add(new_notification(row.id, HEARTBEAT, now))
                self.outbox.ring_after_commit(session)

    @staticmethod
    def _has_open(session: Session, subscription_id: str) -> bool:
        stmt = select(SubscriptionNotification.pk).where(
            col(SubscriptionNotification.subscription_id) == subscription_id,
            col(SubscriptionNotification.state).in_(OPEN),
        )
        return session.exec(stmt.limit(1)).first() is not None

    # -- sending --------------------------------------------------------------------------

    def _claim(self) -> list[Claim]:
        """The due head of each subscription's queue (event N+1 never overtakes event N)."""
        other = aliased(SubscriptionNotification)
        head = (
            select(func.min(other.pk))
            .where(
                col(other.subscription_id) == col(SubscriptionNotification.subscription_id),
                col(other.state).in_(OPEN),
            )
            .scalar_subquery()
        )
        return self.outbox.claim(
            self.clock(),
            _claim_of,
            limit=self.batch_size,
            where=[col(SubscriptionNotification.pk) == head],
            order_by=[col(SubscriptionNotification.pk)],
        )

    def _work(self, claim: Claim) -> None:
        failure: DeliveryFailed | None = None
        try:
            self.send(claim)
        except DeliveryFailed as exc:
            failure = exc
        except HubError as exc:  # a stored Subscription that no longer parses
            failure = DeliveryFailed(exc.reason, retryable=False)
        except Exception as exc:  # a bug: recorded, retried later
            log.exception("notification %d failed", claim.pk)
            failure = DeliveryFailed(f"internal error: {type(exc).__name__}: {exc}", retryable=True)
        self._record(claim, failure)

    def _focus(self, claim: Claim) -> StoredResource:
        resource = json.loads(claim.focus or "{}")
        try:
            with self._translating:  # one at a time: the map's caches are not thread-safe
                content = self.translator.reidentify(resource)
        except AifiError as exc:  # never sent with a pseudonym in it
            raise DeliveryFailed(
                f"{resource.get('resourceType')}/{resource.get('id')} cannot be re-identified: "
                f"{exc}",
                retryable=False,
            ) from exc
        meta = resource.get("meta") or {}
        version = str(meta.get("versionId") or "1")
        return StoredResource(
            resource_type=str(content.get("resourceType")),
            resource_id=str(content.get("id")),
            version_id=int(version) if version.isdigit() else 1,
            last_updated=claim.created_at,
            content=content,
        )

    def send(self, claim: Claim) -> None:
        """POST one notification Bundle to the Subscription's endpoint;
        :class:`DeliveryFailed` when that does not work."""
        with self.db.read() as session:
            row = session.get(RelayedSubscription, claim.subscription_id)
            if row is None:
                raise DeliveryFailed(
                    f"Subscription/{claim.subscription_id} no longer exists", retryable=False
                )
            content, events_since_start = content_of(row), row.events_since_start
        spec = parse_subscription(content)
        if spec.status == "off":
            raise DeliveryFailed(f"Subscription/{claim.subscription_id} is off", retryable=False)
        events = []
        if claim.kind == EVENT:
            events.append((claim.event_number or 0, claim.created_at, self._focus(claim)))
        kind: NotificationKind = (
            "handshake"
            if claim.kind == HANDSHAKE
            else "heartbeat"
            if claim.kind == HEARTBEAT
            else "event-notification"
        )
        base = self.base_url
        bundle = notification_bundle(
            subscription_ref=resource_url(base, "Subscription", claim.subscription_id),
            criteria=spec.criteria,
            status=spec.status,
            kind=kind,
            events_since_start=events_since_start,
            events=events,
            content=spec.content,
            base_url=base,
            timestamp=self.clock(),
        )
        timeout = self.timeout_seconds
        if spec.timeout_seconds:
            timeout = min(timeout, float(spec.timeout_seconds))
        post_bundle(
            self._clients(spec.endpoint), spec.endpoint, bundle, dict(spec.headers), timeout=timeout
        )

    def _record(self, claim: Claim, failure: DeliveryFailed | None) -> None:
        now = self.clock()
        with self.db.write() as session:
            row = self.outbox.lock(session, claim.pk)
            if row is None or not self.outbox.owns(row, claim.attempt, claim.lease_until):
                log.warning("notification %d: taken over by another process", claim.pk)
                return
            subscription = session.get(RelayedSubscription, claim.subscription_id)
            what = (
                f"{claim.kind} {claim.event_number or ''} of Subscription/{claim.subscription_id}"
            )
            if failure is None:
                self.outbox.settle(row, now, None)
                row.delivered_at = now
                log.info("%s delivered", what)
                if subscription is not None:
                    subscription.endpoint_error = None
                    if claim.kind == HANDSHAKE:
                        subscription.handshake_done = True
                    if subscription.heartbeat_seconds:
                        subscription.next_heartbeat_at = now + timedelta(
                            seconds=subscription.heartbeat_seconds
                        )
            else:
                error = f"attempt {row.attempts}: {failure.reason}"
                self.outbox.settle(row, now, Failure(error, failure.retryable))
                log.warning("%s: %s", what, row.last_error)
                if subscription is not None:
                    subscription.endpoint_error = f"{claim.kind} failed: {failure.reason}"
            session.add(row)
            if subscription is not None:
                refresh_status(subscription, now)
                session.add(subscription)


def fhir_base_url(settings: GatewaySettings, config: GatewayConfig) -> str:
    """The gateway's FHIR base as the EPD reaches it (notifications name resources under
    it): :func:`aifi.gateway.fhir.addresses.reachable_base` + ``/fhir``."""
    return addresses.reachable_base(settings, config) + addresses.FHIR_PREFIX


def relay_workers(
    settings: GatewaySettings,
    config: GatewayConfig,
    db: Database,
    key: bytes,
    clock: Clock,
) -> list[tuple[str, SubscriptionRelay | EpdPusher, float]]:
    """The FHIR relay's workers of the gateway's worker process, as (name, worker, poll
    seconds): the subscription relay always, the EPD push when ``fhir.epd_url`` is set.
    Each has its own FHIR client of the hub (FHIR scopes), closed by its ``close()``."""
    base = fhir_base_url(settings, config)
    translator = FhirTranslator(
        SqlFhirIdentities(db),
        key,
        config.profile(),
        base.removesuffix(addresses.FHIR_PREFIX) + addresses.DICOMWEB_PREFIX,
        settings.hub,
    )
    first, longest = settings.retry_backoff_seconds, settings.retry_max_backoff_seconds

    def follower(hub: HubFhir) -> ChangeFollower:
        return ChangeFollower(
            db,
            hub,
            clock=clock,
            min_interval_seconds=config.fhir.poll_seconds / 2,
            backoff_seconds=first,
            max_backoff_seconds=longest,
        )

    hub = HubFhir.connect(settings.hub, settings.credentials)
    poll = config.fhir.poll_seconds
    workers: list[tuple[str, SubscriptionRelay | EpdPusher, float]] = [
        (
            "fhir-subscriptions",
            SubscriptionRelay(
                db,
                follower(hub),
                translator,
                base_url=base,
                clock=clock,
                backoff_seconds=first,
                max_backoff_seconds=longest,
                on_close=hub.close,
            ),
            poll,
        )
    ]
    if config.fhir.epd_url:
        auth = None
        if config.fhir.epd_credentials is not None:
            credentials = Credentials.from_file(config.fhir.epd_credentials)
            auth = ClientCredentials(credentials, config.fhir.epd_scopes)
        epd = httpx.Client(auth=auth, timeout=httpx.Timeout(30.0, connect=10.0))
        own = HubFhir.connect(settings.hub, settings.credentials)  # each worker its own
        pusher = EpdPusher(
            db,
            follower(own),
            own,
            translator,
            config.fhir.epd_url,
            epd,
            clock=clock,
            backoff_seconds=first,
            max_backoff_seconds=longest,
            on_close=own.close,
        )
        workers.append(("epd-push", pusher, poll))
    return workers


__all__ = ["Claim", "SubscriptionRelay", "fhir_base_url", "relay_workers"]
