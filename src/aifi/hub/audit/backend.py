"""FHIR AuditEvent reads on the audit trail: :class:`AuditingFhirBackend` is the hub's FHIR
backend (:class:`aifi.fhir.types.FhirBackend`) with AuditEvent read and search answered from
the ``audit_event`` table (:class:`aifi.hub.audit.search.AuditEventSearch`), so a search sees
every access recorded before it. Everything else goes to the backend it wraps (AuditEvent
writes never come here: the FHIR API answers them 405, the trail is append-only).

The composition root builds it around its backend:
``AuditingFhirBackend(HubFhirBackend(...), trail)``.
"""

from __future__ import annotations

from aifi.fhir.types import (
    FhirBackend,
    Resource,
    SearchQuery,
    SearchResult,
    StoredResource,
    WriteResult,
)
from aifi.hub.audit.search import AuditEventSearch
from aifi.hub.audit.trail import AuditTrail


class AuditingFhirBackend:
    """``inner`` with AuditEvent read and search from ``trail``'s table (module docstring);
    rows without a tenant belong to the trail's operator tenant."""

    def __init__(self, inner: FhirBackend, trail: AuditTrail) -> None:
        self.inner = inner
        self.audit_events = AuditEventSearch(
            trail.db, operator_tenant=trail.operator_tenant, source_id=trail.source_id
        )

    def read(self, tenant: str, resource_type: str, resource_id: str) -> StoredResource:
        if resource_type == "AuditEvent":
            return self.audit_events.read(tenant, resource_id)
        return self.inner.read(tenant, resource_type, resource_id)

    def search(self, tenant: str, query: SearchQuery) -> SearchResult:
        if query.resource_type == "AuditEvent":
            return self.audit_events.search(tenant, query)
        return self.inner.search(tenant, query)

    def create(
        self, tenant: str, resource: Resource, *, if_none_exist: SearchQuery | None = None
    ) -> WriteResult:
        return self.inner.create(tenant, resource, if_none_exist=if_none_exist)

    def update(
        self, tenant: str, resource: Resource, *, if_match: int | None = None
    ) -> WriteResult:
        return self.inner.update(tenant, resource, if_match=if_match)

    def delete(self, tenant: str, resource_type: str, resource_id: str) -> None:
        self.inner.delete(tenant, resource_type, resource_id)


__all__ = ["AuditingFhirBackend"]
