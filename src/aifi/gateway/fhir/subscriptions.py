"""Subscriptions made at the gateway's ``/fhir`` and relayed to the EPD (issue 17): the EPD
subscribes with its own identifiers and receives the R4 Backport notifications (HL7
Subscriptions R5 Backport IG for R4, :mod:`aifi.fhir.subscriptions`) with the hospital's
identities, exactly as it would from the hub (:mod:`aifi.hub.fhir.subscription_channel`).

**Deviation from the issue's wording** ("the gateway subscribes at the hub"). A rest-hook
Subscription at the hub would have the hub POST into the hospital, and the hub never opens
a connection into the hospital (hospital firewalls allow outbound HTTPS only). The gateway
therefore holds the EPD's Subscriptions itself and subscribes *by pulling*: it follows the
hub's changes with each subscription's criteria — pseudonymised by
:meth:`aifi.gateway.fhir.translate.FhirTranslator.pseudonymise_query` — plus
``_lastUpdated=ge<cursor>`` (:class:`aifi.gateway.fhir.changes.ChangeFollower`,
de-duplicated by resource id and ``versionId``). That is the pull form of the same
subscription, the idea of the IG's ``$events`` operation (a subscriber fetches its events
instead of receiving them). The hub sees only pseudonymised searches; what the EPD receives
is re-identified (:meth:`~aifi.gateway.fhir.translate.FhirTranslator.reidentify`). Each poll
sees a resource's current version: versions that came and went between two polls
(``fhir.poll_seconds``) are not notified on their own.

**Behaviour, as at the hub** (:class:`GatewaySubscriptions` for the EPD's
create/read/search/update/delete and ``$status``, which the gateway's FHIR backend
:class:`aifi.gateway.fhir.backend.GatewayFhirBackend` routes here;
:class:`aifi.gateway.fhir.subscription_relay.SubscriptionRelay` in the worker process):

- create: checked with :func:`aifi.fhir.subscriptions.parse_subscription` (rest-hook, an
  absolute endpoint, FHIR JSON payload, criteria a valid search of a subscribable type);
  stored with status ``requested``; a ``handshake`` is queued (IG "Handshake") and the
  follow's cursor set to now. The handshake delivered → ``active``, and the changes since
  the subscription was made are followed and notified.
- each matching change → an ``event-notification`` Bundle, ``events-since-subscription-
  start`` counting per subscription from 1 without gaps; payload ``empty``, ``id-only`` or
  ``full-resource`` (the resource re-identified; ids and fullUrls at the gateway's base).
- ``backport-heartbeat-period`` → a ``heartbeat`` when nothing was sent for that long.
- the EPD's endpoint failing → ``error`` with ``Subscription.error`` naming the reason, the
  notification retried with backoff (the outbox engine), ``active`` again after the next
  success. The HUB unreachable → ``error`` too (``hub unreachable: …``), ``active`` again
  once the hub answers; no change is lost meanwhile (the cursor waits).
- update: ``off`` stops it (queued notifications dropped); other statuses are the
  gateway's to keep; an update of one in ``error`` queues a fresh handshake. delete: gone
  with its queue and its follow.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Protocol
from urllib.parse import parse_qsl

from fastapi import APIRouter, Response
from sqlalchemy import delete
from sqlmodel import Session, col, select

from aifi.clock import Clock, as_utc, utc_now
from aifi.dicomweb.worklist import Doorbell
from aifi.errors import InvalidRequest, NotFound, PreconditionFailed
from aifi.fhir.api import FhirResponse
from aifi.fhir.search import fold, parse_search
from aifi.fhir.subscriptions import (
    parse_subscription,
    resource_url,
    status_parameters,
    status_searchset,
)
from aifi.fhir.types import Resource, SearchQuery, SearchResult, StoredResource, WriteResult
from aifi.gateway.fhir.changes import forget_follow, start_follow
from aifi.gateway.persistence.fhir_tables import (
    RelayedSubscription,
    RelayState,
    SubscriptionNotification,
)
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import OutboxStates
from aifi.principal import PrincipalDep

log = logging.getLogger(__name__)

HANDSHAKE = "handshake"
HEARTBEAT = "heartbeat"
EVENT = "event-notification"
STATES = OutboxStates(
    due=RelayState.PENDING,
    working=RelayState.SENDING,
    done=RelayState.DELIVERED,
    failed=RelayState.FAILED,
)
OPEN = (RelayState.PENDING, RelayState.SENDING)
ERROR_CHARS = 2000


class Translator(Protocol):
    """What the relay uses of :class:`aifi.gateway.fhir.translate.FhirTranslator`."""

    def reidentify(self, resource: Resource) -> Resource: ...

    def pseudonymise_query(
        self, resource_type: str, params: list[tuple[str, str]]
    ) -> list[tuple[str, str]] | None: ...


def follow_name(subscription_id: str) -> str:
    """The name of a Subscription's follow (``gw_fhir_follow.name``)."""
    return f"subscription/{subscription_id}"


def content_of(row: RelayedSubscription) -> Resource:
    return dict(json.loads(row.content))


def stored(row: RelayedSubscription) -> StoredResource:
    """The Subscription as the EPD reads it (``meta`` from the row)."""
    updated = as_utc(row.last_updated)
    content = {
        **content_of(row),
        "id": row.id,
        "meta": {
            "versionId": str(row.version_id),
            "lastUpdated": updated.isoformat(timespec="milliseconds"),
        },
    }
    return StoredResource("Subscription", row.id, row.version_id, updated, content)


def _write(row: RelayedSubscription, content: Resource, now: datetime) -> None:
    """``content`` (without id/meta) as the row's new version."""
    body = {k: v for k, v in content.items() if k not in ("id", "meta")}
    row.content = json.dumps(body)
    row.version_id += 1
    row.last_updated = now


def refresh_status(row: RelayedSubscription, now: datetime) -> None:
    """Keep ``status``/``error`` in step with the row (module docstring): ``off`` stays
    off; an endpoint or hub failure → ``error`` naming it; else ``active`` after the
    handshake, ``requested`` before. A new version only when something changed."""
    content = content_of(row)
    if content.get("status") == "off":
        return
    errors = [e for e in (row.hub_error, row.endpoint_error) if e]
    status = "error" if errors else "active" if row.handshake_done else "requested"
    error = "; ".join(errors)[:ERROR_CHARS] or None
    if content.get("status") == status and content.get("error") == error:
        return
    content["status"] = status
    if error:
        content["error"] = error
    else:
        content.pop("error", None)
    _write(row, content, now)


def new_notification(subscription_id: str, kind: str, now: datetime) -> SubscriptionNotification:
    return SubscriptionNotification(
        subscription_id=subscription_id, kind=kind, next_attempt_at=now, created_at=now
    )


def _check(resource: Resource) -> None:
    """The Subscription's own rules, and its criteria a valid (strict) search."""

    def strict(kind: str, query: str) -> None:
        parse_search(kind, parse_qsl(query, keep_blank_values=True), strict=True)

    parse_subscription(resource, check_criteria=strict)


def _matches(row: RelayedSubscription, query: SearchQuery) -> bool:
    content = content_of(row)
    for criterion in query.criteria:
        codes = [value for _, value in criterion.values]
        if criterion.param == "_id":
            ok = row.id in codes
        elif criterion.param == "status":
            ok = str(content.get("status")) in codes
        elif criterion.param == "url":
            ok = str((content.get("channel") or {}).get("endpoint")) in codes
        elif criterion.param == "criteria":
            have = str(content.get("criteria") or "")
            ok = any(
                have == v if criterion.modifier == "exact" else fold(have).startswith(fold(v))
                for v in codes
            )
        else:
            raise InvalidRequest(f"Searching Subscription by {criterion.param!r} is not supported")
        if criterion.modifier == "not":
            ok = not ok
        if not ok:
            return False
    return True


def status_router(subscriptions: GatewaySubscriptions) -> APIRouter:
    """``GET /fhir/Subscription/{id}/$status`` at the gateway (IG operation ``$status``):
    for :func:`aifi.gateway.fhir.facade.mount_facade`'s ``routers``."""
    router = APIRouter(tags=["fhir"])

    @router.get("/Subscription/{subscription_id}/$status")
    def subscription_status(subscription_id: str, principal: PrincipalDep) -> Response:
        return FhirResponse(subscriptions.status_bundle(principal.tenant, subscription_id))

    return router


class GatewaySubscriptions:
    """The EPD's Subscriptions at the gateway, FhirBackend-shaped for the type
    ``Subscription`` (:class:`aifi.fhir.types.FhirBackend`): the gateway's FHIR backend
    (:mod:`aifi.gateway.fhir.backend`) hands every Subscription interaction to it."""

    def __init__(
        self,
        db: Database,
        *,
        base_url: str | Callable[[], str],
        clock: Clock = utc_now,
        doorbell: Doorbell | None = None,
    ) -> None:
        self.db = db
        self._base_url = base_url
        self.clock = clock
        self.doorbell = doorbell or Doorbell()
        """Rung after a handshake was queued (the relay listens, when in this process)."""

    @property
    def base_url(self) -> str:
        value = self._base_url() if callable(self._base_url) else self._base_url
        return value.rstrip("/")

    def _row(self, session: Session, tenant: str, subscription_id: str) -> RelayedSubscription:
        row = session.get(RelayedSubscription, subscription_id)
        if row is None or row.tenant != tenant:
            raise NotFound(f"Subscription/{subscription_id} does not exist")
        return row

    def read(self, tenant: str, resource_type: str, resource_id: str) -> StoredResource:
        with self.db.read() as session:
            return stored(self._row(session, tenant, resource_id))

    def search(self, tenant: str, query: SearchQuery) -> SearchResult:
        with self.db.read() as session:
            rows = session.exec(
                select(RelayedSubscription)
                .where(col(RelayedSubscription.tenant) == tenant)
                .order_by(col(RelayedSubscription.last_updated), col(RelayedSubscription.id))
            ).all()
        found = [stored(r) for r in rows if _matches(r, query)]
        if query.sort and query.sort[0] == "-_lastUpdated":
            found.reverse()
        if query.summary_count:
            return SearchResult(total=len(found))
        return SearchResult(
            total=len(found), matches=found[query.offset : query.offset + query.count]
        )

    def create(
        self, tenant: str, resource: Resource, *, if_none_exist: SearchQuery | None = None
    ) -> WriteResult:
        _check(resource)
        if if_none_exist is not None:
            found = self.search(tenant, if_none_exist)
            if found.total == 1:
                return WriteResult(stored=found.matches[0], created=False)
            if found.total > 1:
                raise PreconditionFailed(
                    f"If-None-Exist matches {found.total} Subscriptions; it must match one"
                )
        spec = parse_subscription(resource)
        content = {k: v for k, v in resource.items() if k not in ("id", "meta", "error")}
        content["status"] = "requested"
        now = self.clock()
        row = RelayedSubscription(
            id=uuid.uuid4().hex,
            tenant=tenant,
            content=json.dumps(content),
            version_id=1,
            last_updated=now,
            heartbeat_seconds=spec.heartbeat_seconds,
        )
        with self.db.write() as session:
            session.add(row)
            start_follow(session, follow_name(row.id), now)
            session.add(new_notification(row.id, HANDSHAKE, now))
            result = stored(row)
        self.doorbell.ring()
        return WriteResult(stored=result, created=True)

    def update(
        self, tenant: str, resource: Resource, *, if_match: int | None = None
    ) -> WriteResult:
        _check(resource)
        subscription_id = str(resource.get("id") or "")
        now = self.clock()
        with self.db.write() as session:
            row = self._row(session, tenant, subscription_id)
            if if_match is not None and if_match != row.version_id:
                raise PreconditionFailed(
                    f"Subscription/{subscription_id} is at version {row.version_id}, not {if_match}"
                )
            current = content_of(row)
            content = {k: v for k, v in resource.items() if k not in ("id", "meta", "error")}
            if content.get("status") != "off":  # the gateway keeps requested/active/error
                content["status"] = current.get("status")
                if current.get("error"):
                    content["error"] = current["error"]
            row.heartbeat_seconds = parse_subscription(resource).heartbeat_seconds
            if row.heartbeat_seconds is None:
                row.next_heartbeat_at = None
            _write(row, content, now)
            if content["status"] == "off":
                self._drop_open(session, subscription_id)
            elif current.get("status") == "error":  # a fresh start (a fixed endpoint)
                self._drop_open(session, subscription_id)
                row.handshake_done = False
                row.endpoint_error = None
                session.add(new_notification(row.id, HANDSHAKE, now))
                refresh_status(row, now)
            session.add(row)
            result = stored(row)
        self.doorbell.ring()
        return WriteResult(stored=result, created=False)

    def delete(self, tenant: str, resource_type: str, resource_id: str) -> None:
        with self.db.write() as session:
            row = self._row(session, tenant, resource_id)
            self._drop_open(session, resource_id)
            forget_follow(session, follow_name(resource_id))
            session.delete(row)

    @staticmethod
    def _drop_open(session: Session, subscription_id: str) -> None:
        session.exec(
            delete(SubscriptionNotification).where(
                col(SubscriptionNotification.subscription_id) == subscription_id,
                col(SubscriptionNotification.state).in_(OPEN),
            )
        )

    def status_bundle(self, tenant: str, subscription_id: str) -> Resource:
        """``GET [base]/Subscription/{id}/$status`` (IG
        ``OperationDefinition-backport-subscription-status``): a searchset Bundle with the
        status Parameters (type ``query-status``)."""
        with self.db.read() as session:
            row = self._row(session, tenant, subscription_id)
            content = content_of(row)
            events = row.events_since_start
        ref = resource_url(self.base_url, "Subscription", subscription_id)
        status = status_parameters(
            subscription_ref=ref,
            criteria=str(content.get("criteria") or ""),
            status=str(content.get("status") or "requested"),
            kind="query-status",
            events_since_start=events,
            base_url=self.base_url,
            error=str(content["error"]) if content.get("error") else None,
        )
        return status_searchset(status, self_url=f"{ref}/$status")


__all__ = [
    "EVENT",
    "HANDSHAKE",
    "HEARTBEAT",
    "OPEN",
    "STATES",
    "GatewaySubscriptions",
    "Translator",
    "content_of",
    "follow_name",
    "new_notification",
    "refresh_status",
    "status_router",
    "stored",
]
