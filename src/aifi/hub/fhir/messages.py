"""What the FHIR channels out of the hub (subscription notifications,
:mod:`aifi.hub.fhir.subscription_channel`; the EPD push, :mod:`aifi.hub.fhir.epd_push`; the
urgent-finding webhook, :mod:`aifi.hub.fhir.webhook`) share: the ``fhir_outbox`` rows'
channels, kinds and states, a claimed row (:class:`Message`), queueing one in the caller's
transaction, the HTTP clients, and what they use of the FHIR store.
:mod:`aifi.hub.fhir.notify` works the outbox off.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from sqlmodel import Session

from aifi.fhir.types import Resource, StoredResource
from aifi.hub.persistence.outbox import Outbox, OutboxStates
from aifi.hub.persistence.tables import FhirOutbox
from aifi.hub.persistence.tables.fhir import FhirOutboxState

SUBSCRIPTION = "subscription"
EPD_PUSH = "epd-push"
WEBHOOK = "webhook"
HANDSHAKE = "handshake"
HEARTBEAT = "heartbeat"
EVENT = "event-notification"
PUSH = "push"

PENDING = FhirOutboxState.PENDING
SENDING = FhirOutboxState.SENDING
DELIVERED = FhirOutboxState.DELIVERED
FAILED = FhirOutboxState.FAILED
OPEN = (PENDING, SENDING)
STATES = OutboxStates(due=PENDING, working=SENDING, done=DELIVERED, failed=FAILED)

ERROR_CHARS = 2000

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


@dataclass
class Message:
    """One claimed ``fhir_outbox`` row: the fencing token is (attempt, lease_until)."""

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


def queue(
    session: Session,
    outbox: Outbox[FhirOutbox],
    now: datetime,
    tenant: str,
    channel: str,
    kind: str,
    **fields: Any,
) -> FhirOutbox:
    """Add a pending row in the caller's transaction; the outbox's loop is woken once it
    commits."""
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
    outbox.ring_after_commit(session)
    return row


class Clients:
    """One shared HTTP client per upstream (scheme, host, port)."""

    def __init__(self, timeout_seconds: float, max_connections: int) -> None:
        self.timeout_seconds = timeout_seconds
        self.max_connections = max_connections
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def __call__(self, url: str) -> httpx.Client:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            client = self._clients.get(origin)
            if client is None:
                client = httpx.Client(
                    timeout=httpx.Timeout(self.timeout_seconds),
                    follow_redirects=False,
                    limits=httpx.Limits(max_connections=self.max_connections),
                )
                self._clients[origin] = client
            return client

    def close(self) -> None:
        """Close the clients (a later call opens new ones)."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


__all__ = [
    "EPD_PUSH",
    "EVENT",
    "HANDSHAKE",
    "HEARTBEAT",
    "OPEN",
    "PUSH",
    "STATES",
    "SUBSCRIPTION",
    "WEBHOOK",
    "Clients",
    "Matcher",
    "Message",
    "ResourceStore",
    "queue",
]
