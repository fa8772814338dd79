"""The push of final DiagnosticReports to each hospital's EPD (:mod:`aifi.fhir.epd_client`),
one channel of the FHIR outbox (:mod:`aifi.hub.fhir.notify` works it off).

For a tenant with an EPD URL, a DiagnosticReport that *becomes* ``final`` queues one
``epd-push`` row, in the transaction that changes it. The rows of one tenant form one queue
(only its head is sent), so an EPD that is down costs one timeout per backoff step, however
many reports wait. At send time the report and its Observations are read as they are then
(the store keeps current versions only) and POSTed as one transaction Bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx
from sqlmodel import Session

from aifi.clock import Clock
from aifi.fhir.epd_client import DeliveryFailed, post_bundle, report_transaction
from aifi.fhir.types import StoredResource
from aifi.hub.fhir.messages import EPD_PUSH, PUSH, Message, ResourceStore, queue
from aifi.hub.persistence.database import Database
from aifi.hub.persistence.outbox import Outbox
from aifi.hub.persistence.tables import FhirOutbox


class EpdPush:
    """Queues and sends the ``epd-push`` rows of the tenants in ``targets`` (tenant → the
    EPD's FHIR base URL)."""

    def __init__(
        self,
        db: Database,
        store: ResourceStore,
        outbox: Outbox[FhirOutbox],
        targets: Mapping[str, str],
        *,
        clock: Clock,
        client: Callable[[str], httpx.Client],
    ) -> None:
        self.db = db
        self.store = store
        self.outbox = outbox
        self.targets = dict(targets)
        self.clock = clock
        self.client = client

    def on_change(
        self,
        session: Session,
        tenant: str,
        stored: StoredResource,
        previous: StoredResource | None,
    ) -> None:
        """Queue a push when ``stored`` is a DiagnosticReport that just became final."""
        if (
            tenant in self.targets
            and stored.resource_type == "DiagnosticReport"
            and stored.content.get("status") == "final"
            and (previous is None or previous.content.get("status") != "final")
        ):
            queue(
                session,
                self.outbox,
                self.clock(),
                tenant,
                EPD_PUSH,
                PUSH,
                focus_type=stored.resource_type,
                focus_id=stored.resource_id,
                focus_version=stored.version_id,
            )

    def describe(self, message: Message) -> str:
        target = self.targets.get(message.tenant, "(no EPD configured)")
        return f"push of DiagnosticReport/{message.focus_id} to {target}"

    def send(self, message: Message) -> None:
        """POST the report with its Observations to the tenant's EPD (module docstring);
        :class:`DeliveryFailed` when that does not work."""
        url = self.targets.get(message.tenant)
        if not url:
            raise DeliveryFailed(
                f"no EPD is configured for tenant {message.tenant!r}", retryable=False
            )
        with self.db.read() as session:
            report = self.store.get(
                session, message.tenant, "DiagnosticReport", str(message.focus_id)
            )
            observations = []
            if report is not None:
                for ref in report.content.get("result") or []:
                    target = str((ref or {}).get("reference") or "")
                    kind, _, obs_id = target.rpartition("/")
                    if kind.rsplit("/", 1)[-1] != "Observation" or not obs_id:
                        continue
                    found = self.store.get(session, message.tenant, "Observation", obs_id)
                    if found is not None:
                        observations.append(found.content)
        if report is None:
            raise DeliveryFailed(
                f"DiagnosticReport/{message.focus_id} no longer exists", retryable=False
            )
        try:
            bundle = report_transaction(report.content, observations)
        except ValueError as exc:
            raise DeliveryFailed(str(exc), retryable=False) from exc
        post_bundle(self.client(url), url.rstrip("/"), bundle)


__all__ = ["EpdPush"]
