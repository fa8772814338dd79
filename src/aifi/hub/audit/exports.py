"""The hub's own exports on the audit trail (issue 6; BALP export, DICOM PS3.15 A.5.3.4 and
A.5.3.6): data the hub sent out by itself, recorded with ``interaction`` ``export``, the hub
as the requestor and the destination as the other agent.

Each sender receives its reporter in its constructor (the composition root builds both):

- :class:`PacsDeliveryAudit` — the ``audit`` of :class:`aifi.hub.delivery.deliverer.Deliverer`,
  called after each recorded attempt to deliver an AI result to a PACS: DCM 110104 DICOM
  Instances Transferred, the instances confirmed by that attempt.
- :class:`FhirExportAudit` — the ``audit`` of :class:`aifi.hub.fhir.notify.FhirNotifier`,
  called after each attempt to send a resource (EPD push, urgent-finding webhook, subscription
  event notification):
  DCM 110106 Export.

Both are plain callables with the signature their sender calls; they never raise for a row
that could not be written (the trail logs and counts it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from aifi.hub.audit.events import EXPORT, TRANSFERRED, AuditEntry
from aifi.hub.audit.trail import AuditTrail
from aifi.hub.persistence.tables import AiResult


def record_export(
    trail: AuditTrail,
    *,
    tenant: str,
    channel: str,
    destination: str,
    address: str | None,
    outcome: int,
    event_code: str = EXPORT,
    study_uid: str | None = None,
    entities: tuple[dict[str, str], ...] = (),
    error: str | None = None,
) -> int | None:
    """Record data the hub sent out on its own (module docstring); the row's key, or None
    when it could not be written."""
    target: dict[str, str] = {"kind": "destination", "id": destination}
    if address:
        target["address"] = address
    if error:
        target["error"] = error[:1000]
    return trail.record(
        AuditEntry(
            action="R",
            interaction="export",
            event_code=event_code,
            subtype=channel,
            outcome=outcome,
            client_id=trail.source_id,
            recorded_at=trail.clock(),
            tenant=tenant,
            role="hub",
            study_uid=study_uid,
            entities=(target, *entities),
        )
    )


class Destinations(Protocol):
    """Where the PACS destinations are looked up
    (:class:`aifi.hub.delivery.destinations.DestinationsConfig`)."""

    def destination(self, tenant: str, name: str) -> object | None: ...


def destination_address(destinations: Destinations, tenant: str, name: str) -> str | None:
    """The network address recorded for a PACS destination: its URL (DICOMweb), else
    ``host:port`` (DIMSE)."""
    found = destinations.destination(tenant, name)
    if found is None:
        return None
    url = getattr(found, "url", None)
    if url:
        return str(url)
    host, port = getattr(found, "host", None), getattr(found, "port", None)
    return f"{host}:{port}" if host else None


class PacsDeliveryAudit:
    """Records each attempt of the PACS delivery (module docstring). ``destinations`` are
    the Deliverer's own, for the address of the destination."""

    def __init__(self, trail: AuditTrail, destinations: Destinations) -> None:
        self.trail = trail
        self.destinations = destinations

    def __call__(
        self,
        tenant: str,
        result_pk: int,
        destination: str,
        state: str,
        confirmed: list[str],
        error: str | None,
    ) -> None:
        """``(tenant, result_pk, destination, state, confirmed UIDs, last_error)`` of one
        recorded attempt (``state``: ``delivered``, ``failed`` or still to be retried)."""
        with self.trail.db.read() as session:
            result = session.get(AiResult, result_pk)
        entities: list[dict[str, str]] = [{"kind": "instance", "id": u} for u in confirmed]
        study_uid = None
        if result is not None:
            study_uid = result.study_instance_uid or None
            entities.insert(0, {"kind": "workitem", "id": result.workitem_uid})
        outcome = 0 if state == "delivered" else 8 if state == "failed" else 4
        record_export(
            self.trail,
            tenant=tenant,
            channel="PACS delivery",
            destination=destination,
            address=destination_address(self.destinations, tenant, destination),
            outcome=outcome,
            event_code=TRANSFERRED,
            study_uid=study_uid,
            entities=tuple(entities),
            error=error if outcome else None,
        )


class FhirExportAudit:
    """Records each attempt of the FHIR notifier to send a resource (module docstring).
    ``push_targets`` are the EPD base URLs per tenant (``settings.epd_fhir_urls``), the
    address of an EPD push."""

    def __init__(
        self,
        trail: AuditTrail,
        push_targets: Mapping[str, str],
        webhook_for: Callable[[str], str | None] | None = None,
    ) -> None:
        self.trail = trail
        self.push_targets = dict(push_targets)
        self.webhook_for = webhook_for
        """Tenant → its urgent-finding webhook URL (the address of a ``webhook`` call)."""

    def __call__(
        self,
        tenant: str,
        channel: str,
        subscription_id: str | None,
        focus: tuple[str, str] | None,
        error: str | None,
        retryable: bool,
    ) -> None:
        """``(tenant, channel, subscription id, focus (type, id), error, retryable)`` of one
        attempt (``channel`` ``epd-push`` or a subscription's)."""
        entities: list[dict[str, str]] = []
        if focus is not None:
            entities.append({"kind": "fhir", "type": focus[0], "id": focus[1]})
        if subscription_id:
            entities.append({"kind": "subscription", "id": subscription_id})
        push = channel == "epd-push"
        if channel == "webhook":
            label, destination = "urgent-finding webhook", "webhook"
            address = self.webhook_for(tenant) if self.webhook_for is not None else None
        elif push:
            label, destination, address = "EPD push", "EPD", self.push_targets.get(tenant)
        else:
            label, destination = "subscription notification", f"Subscription/{subscription_id}"
            address = None
        record_export(
            self.trail,
            tenant=tenant,
            channel=label,
            destination=destination,
            address=address,
            outcome=0 if error is None else 4 if retryable else 8,
            entities=tuple(entities),
            error=error,
        )


__all__ = [
    "Destinations",
    "FhirExportAudit",
    "PacsDeliveryAudit",
    "destination_address",
    "record_export",
]
