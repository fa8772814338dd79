"""The hub behind the FHIR REST API (:class:`aifi.fhir.types.FhirBackend`).

Reads and searches go straight to the resource store (:class:`SqlFhirStore`). Writes are
where the hub has rules of its own:

- ``Task`` create: an EPD asking for AI (:class:`~aifi.hub.fhir.requests.AiRequests`);
  update only to cancel such a request (status ``cancelled``); the Tasks that mirror the
  hub's own workitems change only with their workitem.
- ``ServiceRequest`` create: stored as given (an EPD's order a Task can be ``basedOn``).
- ``Subscription`` create/update/delete: checked (rest-hook, criteria a valid search of a
  supported type), then handed to the notifier, which does the handshake and keeps the
  status (R5 Subscriptions Backport IG for R4).
- Everything else is the hub's projection: read and search only.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from aifi.errors import NotFound, PreconditionFailed, Unprocessable
from aifi.fhir.search import parse_search
from aifi.fhir.subscriptions import parse_subscription
from aifi.fhir.types import Resource, SearchQuery, SearchResult, StoredResource, WriteResult
from aifi.hub.fhir.notify import FhirNotifier
from aifi.hub.fhir.projection import FhirProjector
from aifi.hub.fhir.requests import AiRequests
from aifi.hub.fhir.store import SqlFhirStore
from aifi.hub.persistence.database import Database


class HubFhirBackend:
    def __init__(
        self,
        db: Database,
        store: SqlFhirStore,
        requests: AiRequests,
        notifier: FhirNotifier,
        projector: FhirProjector,
    ) -> None:
        self.db = db
        self.store = store
        self.requests = requests
        self.notifier = notifier
        self.projector = projector

    def _in_step(self, tenant: str) -> None:
        """Work off the tenant's pending projection first: a client reads its own writes
        (and every change acknowledged before it asked)."""
        self.projector.catch_up(tenant)

    def read(self, tenant: str, resource_type: str, resource_id: str) -> StoredResource:
        self._in_step(tenant)
        return self.store.read(tenant, resource_type, resource_id)

    def search(self, tenant: str, query: SearchQuery) -> SearchResult:
        self._in_step(tenant)
        return self.store.search(tenant, query)

    def create(
        self, tenant: str, resource: Resource, *, if_none_exist: SearchQuery | None = None
    ) -> WriteResult:
        kind = resource.get("resourceType")
        self._in_step(tenant)
        if kind == "Task":
            if if_none_exist is not None:
                found = self.store.search(tenant, if_none_exist)
                if found.total == 1:
                    return WriteResult(stored=found.matches[0], created=False)
                if found.total > 1:
                    raise PreconditionFailed(
                        f"If-None-Exist matches {found.total} Tasks; it must match at most one"
                    )
            return self.requests.create(tenant, resource)
        if kind == "ServiceRequest":
            with self.db.write() as session:
                return self.store.create(session, tenant, resource, if_none_exist=if_none_exist)
        if kind == "Subscription":
            self._check_subscription(resource)
            resource = {**resource, "status": "requested"}
            resource.pop("error", None)
            with self.db.write() as session:
                result = self.store.create(session, tenant, resource)
                self.notifier.subscription_created(session, tenant, result.stored)
            self.notifier.doorbell.ring()
            return result
        raise Unprocessable(f"{kind} resources are created by the hub, not by clients")

    def update(
        self, tenant: str, resource: Resource, *, if_match: int | None = None
    ) -> WriteResult:
        kind = resource.get("resourceType")
        resource_id = str(resource.get("id") or "")
        self._in_step(tenant)
        if kind == "Task":
            current = self.store.read(tenant, "Task", resource_id)
            if if_match is not None and if_match != current.version_id:
                raise PreconditionFailed(
                    f"Task/{resource_id} is at version {current.version_id}, not {if_match}"
                )
            if resource.get("status") != "cancelled":
                raise Unprocessable(
                    "An EPD changes its Task only to cancel it (status 'cancelled'); the hub "
                    "keeps everything else in step with the workitem"
                )
            reason = str((resource.get("statusReason") or {}).get("text") or "")
            self.requests.cancel(tenant, resource_id, reason or "cancelled by the EPD")
            self._in_step(tenant)
            return WriteResult(stored=self.store.read(tenant, "Task", resource_id), created=False)
        if kind == "Subscription":
            self._check_subscription(resource)
            with self.db.write() as session:
                existing = self.store.get(session, tenant, "Subscription", resource_id)
                if existing is None:
                    raise NotFound(f"Subscription/{resource_id} does not exist")
                status = resource.get("status")
                if status != "off":  # the hub keeps requested/active/error itself
                    resource = {**resource, "status": existing.content.get("status")}
                result = self.store.update(session, tenant, resource, if_match=if_match)
                self.notifier.subscription_created(session, tenant, result.stored)
            return result
        raise Unprocessable(f"{kind} resources are kept by the hub; clients cannot change them")

    def delete(self, tenant: str, resource_type: str, resource_id: str) -> None:
        if resource_type != "Subscription":
            raise Unprocessable(f"{resource_type} resources cannot be deleted")
        with self.db.write() as session:
            self.store.delete(session, tenant, resource_type, resource_id)
            self.notifier.subscription_removed(session, tenant, resource_id)

    @staticmethod
    def _check_subscription(resource: Resource) -> None:
        """The Subscription's own rules, and its criteria a valid (strict) search."""
        parse_subscription(resource, check_criteria=_strict_search)


def _strict_search(kind: str, query: str) -> None:
    parse_search(kind, parse_qsl(query, keep_blank_values=True), strict=True)
