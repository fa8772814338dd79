"""The urgent-finding webhook: one channel of the FHIR outbox (:mod:`aifi.hub.fhir.notify`
works it off, with the same claim lease, backoff and audit as subscription notifications and
the EPD push).

For a tenant with a webhook URL (``notify_webhook_urls``, else ``notify_webhook_url``), a
Communication that is *created* with priority ``urgent`` (an urgent AI finding,
:mod:`aifi.fhir.mapping.communications`) queues one ``webhook`` row in the transaction that
stores it. At send time the hub POSTs a small JSON object::

    {"type": "urgent-finding", "tenant": "...", "product": "AIFI-IPE",
     "communication": "Communication/<id>", "diagnosticReport": "DiagnosticReport/<id>",
     "sent": "<FHIR dateTime>"}

Pseudonymous ids only (the workitem UID the hub made): never a patient name, Patient ID,
accession number or study UID — a receiver that needs more reads the Communication through
the FHIR API (at the gateway: re-identified). Retried on 408/429/503/504 and on network
errors (the outbox's backoff), given up on any other status.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import httpx
from sqlmodel import Session

from aifi.clock import Clock
from aifi.fhir.codes import PRODUCT_SYSTEM
from aifi.fhir.epd_client import DeliveryFailed
from aifi.fhir.types import Resource, StoredResource
from aifi.hub.fhir.messages import WEBHOOK, Message, ResourceStore, queue
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import Outbox
from aifi.hub.persistence.tables import FhirOutbox

URGENT_FINDING = "urgent-finding"
"""The ``type`` of the JSON object, and the ``kind`` of the outbox row."""
RETRYABLE = frozenset({408, 429, 503, 504})


def is_urgent_finding(stored: StoredResource, previous: StoredResource | None) -> bool:
    """A Communication of an urgent finding that was just created."""
    return (
        previous is None
        and stored.resource_type == "Communication"
        and stored.content.get("priority") == "urgent"
    )


def _reference_of(resource: Resource, element: str, kind: str) -> str | None:
    for ref in resource.get(element) or []:
        text = str((ref or {}).get("reference") or "")
        if text.startswith(kind + "/"):
            return text
    return None


def _product_of(resource: Resource) -> str | None:
    for code in (resource.get("topic") or {}).get("coding") or []:
        if code.get("system") == PRODUCT_SYSTEM and code.get("code"):
            return str(code["code"])
    return None


def webhook_body(tenant: str, communication: StoredResource) -> dict[str, Any]:
    """The JSON object POSTed for a Communication (module docstring): ids only."""
    content = communication.content
    return {
        "type": URGENT_FINDING,
        "tenant": tenant,
        "product": _product_of(content),
        "communication": f"Communication/{communication.resource_id}",
        "diagnosticReport": _reference_of(content, "about", "DiagnosticReport"),
        "sent": content.get("sent"),
    }


class WebhookChannel:
    """Queues and sends the ``webhook`` rows of the FHIR outbox (module docstring)."""

    def __init__(
        self,
        db: Database,
        store: ResourceStore,
        outbox: Outbox[FhirOutbox],
        *,
        default_url: str | None,
        urls: Mapping[str, str],
        clock: Clock,
        client: Callable[[str], httpx.Client],
    ) -> None:
        self.db = db
        self.store = store
        self.outbox = outbox
        self.default_url = default_url or None
        self.urls = dict(urls)
        self.clock = clock
        self.client = client

    def url_for(self, tenant: str) -> str | None:
        """The tenant's webhook URL: its own, else the one for every tenant, else None."""
        return self.urls.get(tenant) or self.default_url

    def on_change(
        self, session: Session, tenant: str, stored: StoredResource, previous: StoredResource | None
    ) -> None:
        """Queue one call when ``stored`` is a new urgent-finding Communication of a tenant
        with a webhook."""
        if self.url_for(tenant) and is_urgent_finding(stored, previous):
            queue(
                session,
                self.outbox,
                self.clock(),
                tenant,
                WEBHOOK,
                URGENT_FINDING,
                focus_type=stored.resource_type,
                focus_id=stored.resource_id,
                focus_version=stored.version_id,
            )

    def describe(self, message: Message) -> str:
        return f"webhook for Communication/{message.focus_id} to {self.url_for(message.tenant)}"

    def send(self, message: Message) -> None:
        """POST the JSON object; :class:`DeliveryFailed` when the receiver does not take it."""
        url = self.url_for(message.tenant)
        if not url:
            raise DeliveryFailed(
                f"no webhook is configured for tenant {message.tenant!r}", retryable=False
            )
        with self.db.read() as session:
            stored = self.store.get(session, message.tenant, "Communication", str(message.focus_id))
        if stored is None:
            raise DeliveryFailed(
                f"Communication/{message.focus_id} no longer exists", retryable=False
            )
        try:
            response = self.client(url).post(url, json=webhook_body(message.tenant, stored))
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}", retryable=True) from exc
        if response.status_code >= 300:
            raise DeliveryFailed(
                f"the webhook answered {response.status_code}",
                retryable=response.status_code in RETRYABLE,
            )


__all__ = ["URGENT_FINDING", "WebhookChannel", "is_urgent_finding", "webhook_body"]
