"""The gateway's :class:`~aifi.fhir.types.FhirBackend`: every FHIR interaction of the EPD
relayed to the hub (:class:`~aifi.gateway.fhir.hub_fhir.HubFhir`), pseudonymised on the
way in and re-identified on the way out (:class:`~aifi.gateway.fhir.translate.FhirTranslator`),
under the hub's own REST router (:func:`aifi.fhir.api.build_router`, FHIR R4 http.html).

Why the hub's router over a relaying backend, not a router of our own: the router already
does everything the EPD sees besides identities — JSON/format checks, 404/405 per type,
``If-None-Match``, ``Prefer: return``, OperationOutcomes, and the searchset Bundle whose
``self``/``next`` links carry the EPD's own parameters at the gateway's base
(:func:`aifi.fhir.bundles.searchset`). A parsed :class:`~aifi.fhir.types.SearchQuery` loses
nothing the hub needs: criteria are written back exactly (dates at their own precision, see
:mod:`aifi.gateway.fhir.query`), and what the parser skipped is reported by the gateway
as the hub would (never sent: its value may be an original identifier).

Interactions: read and search of Task, DiagnosticReport, Observation, Communication (an urgent
AI finding: its subject and its ImagingStudy in ``about`` re-identified like a report's),
ImagingStudy, Patient, Device, Provenance, ServiceRequest; create of Task and
ServiceRequest (conditional with ``If-None-Exist``); update of a Task (the hub allows only
``cancelled``); Subscription is handed to the subscription relay
(:mod:`aifi.gateway.fhir.subscriptions`).

Paging: the hub pages; when a ``started`` criterion had to be widened (no single patient,
see :mod:`aifi.gateway.fhir.translate`), the gateway reads up to :data:`MAX_FILTERED`
matches, filters them and pages itself (``total`` is then the filtered count).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import urlencode

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import select

from aifi.clock import utc_now
from aifi.errors import InvalidRequest, NotFound, Unidentifiable, UpstreamRefused
from aifi.fhir.bundles import outcome
from aifi.fhir.search import MAX_COUNT, reference_key
from aifi.fhir.types import (
    FhirBackend,
    Resource,
    SearchQuery,
    SearchResult,
    StoredResource,
    WriteResult,
)
from aifi.gateway.deid.types import PatientIdentity
from aifi.gateway.fhir.query import matches_date
from aifi.gateway.fhir.translate import (
    FhirTranslator,
    gateway_patient_id,
    hub_patient_id,
    identity_text,
)
from aifi.gateway.forward.pseudonym_map import SqlPseudonymLookup
from aifi.gateway.persistence.tables import PatientMap, StudyMap, UidMap
from aifi.hub.persistence.database import Database

GATEWAY_TYPES = frozenset(
    {
        "Task",
        "DiagnosticReport",
        "Observation",
        "Communication",
        "ImagingStudy",
        "Patient",
        "Device",
        "Provenance",
        "ServiceRequest",
        "Subscription",
    }
)
"""What the facade serves (AuditEvent stays with the hub's administrators)."""

CREATE_TYPES = frozenset({"Task", "ServiceRequest"})
MAX_FILTERED = 2000
"""Most hub matches read for a search the gateway filters itself."""
_ACCESSION_KEY = "ACSN:"
"""``gw_uid_map`` key prefix of an accession number an EPD named (pseudonym → original)."""
_PATIENT_KEY = "PID:"
_ISSUER_KEY = "PIDI:"
"""``gw_uid_map`` key prefixes of a Patient ID and its issuer an EPD named before the
pseudonymiser met the patient (``gw_patient`` is the pseudonymiser's alone: a row there
carries the identity re-identification restores)."""
_ACCESSION_TAG = "00080050"


class HubFhirClient(Protocol):
    """What the backend uses of :class:`~aifi.gateway.fhir.hub_fhir.HubFhir`."""

    def search(self, resource_type: str, params: list[tuple[str, str]]) -> Resource: ...

    def read(self, resource_type: str, resource_id: str) -> Resource: ...

    def create(
        self, resource: Resource, *, if_none_exist: str | None = None
    ) -> tuple[int, Resource]: ...

    def update(
        self, resource: Resource, *, if_match: str | None = None
    ) -> tuple[int, Resource]: ...


class SqlFhirIdentities(SqlPseudonymLookup):
    """:class:`~aifi.gateway.fhir.translate.FhirIdentities` over the gateway's pseudonym
    map. Patient resource ids are hashes (not reversible): the ids of every patient in
    ``gw_patient`` are computed once and kept, and computed again on a miss (a new patient)."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self._lock = threading.Lock()
        self._by_hub: dict[str, str] = {}
        self._by_gateway: dict[str, str] = {}
        self._rows = -1

    def patients_by_original(self, original_id: str) -> list[PatientIdentity]:
        with self.db.read() as session:
            rows = session.exec(
                select(PatientMap.pseudo_id).where(PatientMap.original_id == original_id)
            ).all()
        return [p for p in (self.patient(pseudo) for pseudo in rows) if p is not None]

    def patient_by_fhir_id(self, fhir_id: str, *, at_hub: bool) -> PatientIdentity | None:
        table = self._by_hub if at_hub else self._by_gateway
        pseudo = table.get(fhir_id)
        if pseudo is None:
            # Look again whatever _refresh says: a thread that missed at the same time may
            # have filled the table for both of us (then this one's refresh finds no news).
            self._refresh()
            pseudo = table.get(fhir_id)
        return self.patient(pseudo) if pseudo else None

    def _refresh(self) -> bool:
        """Compute the ids of patients added since the last time; False when none were."""
        with self._lock, self.db.read() as session:
            count = session.exec(select(func.count()).select_from(PatientMap)).one()
            if count == self._rows:
                return False
            rows = session.exec(
                select(PatientMap.pseudo_id, PatientMap.original_id, PatientMap.issuer)
            ).all()
            for pseudo, original, issuer in rows:
                identity = PatientIdentity(pseudo, original, issuer, 0)
                self._by_hub[hub_patient_id(pseudo)] = pseudo
                self._by_gateway[gateway_patient_id(identity)] = pseudo
            self._rows = count
            return True

    def original_accession(self, accession_pseudo: str) -> str | None:
        with self.db.read() as session:
            row = session.exec(
                select(StudyMap).where(StudyMap.accession_pseudo == accession_pseudo).limit(1)
            ).first()
            remembered = session.get(UidMap, _ACCESSION_KEY + accession_pseudo)
        if row is not None:
            original = identity_text(json.loads(row.identity_json), _ACCESSION_TAG)
            if original:
                return original
        return remembered.original if remembered else None

    def patient(self, pseudo_id: str) -> PatientIdentity | None:
        known = super().patient(pseudo_id)
        if known is not None:
            return known
        with self.db.read() as session:
            original = session.get(UidMap, _PATIENT_KEY + pseudo_id)
            issuer = session.get(UidMap, _ISSUER_KEY + pseudo_id)
        if original is None:
            return None
        return PatientIdentity(pseudo_id, original.original, issuer.original if issuer else "", 0)

    def remember_patient(self, pseudo_id: str, original_id: str, issuer: str) -> None:
        self._remember(_PATIENT_KEY + pseudo_id, original_id)
        if issuer:
            self._remember(_ISSUER_KEY + pseudo_id, issuer)

    def remember_uid(self, pseudo: str, original: str) -> None:
        self._remember(pseudo, original)

    def remember_accession(self, pseudo: str, original: str) -> None:
        self._remember(_ACCESSION_KEY + pseudo, original)

    def _remember(self, pseudo: str, original: str) -> None:
        """Insert-if-absent (``ON CONFLICT DO NOTHING``): the fact is deterministic, so a
        concurrent writer of the same row wrote the same."""
        with self.db.write() as session:
            dialect = session.get_bind().dialect.name
            insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
            row = {"pseudo": pseudo, "original": original, "created_at": utc_now()}
            session.execute(insert(UidMap).values([row]).on_conflict_do_nothing())


def _stored(content: Resource) -> StoredResource:
    meta = content.get("meta") or {}
    version = str(meta.get("versionId") or "1")
    try:
        updated = datetime.fromisoformat(str(meta.get("lastUpdated")))
    except ValueError:
        updated = utc_now()
    return StoredResource(
        resource_type=str(content.get("resourceType")),
        resource_id=str(content.get("id")),
        version_id=int(version) if version.isdigit() else 1,
        last_updated=updated,
        content=content,
    )


class GatewayFhirBackend:
    """:class:`~aifi.fhir.types.FhirBackend` relaying to the hub (see the module docstring).
    ``tenant`` is ignored: the hub decides it from the gateway's token (its own hospital)."""

    def __init__(
        self,
        hub: HubFhirClient,
        translator: FhirTranslator,
        *,
        subscriptions: FhirBackend | None = None,
    ) -> None:
        self.hub = hub
        self.translator = translator
        self.subscriptions = subscriptions

    # -- read ---------------------------------------------------------------------------

    def read(self, tenant: str, resource_type: str, resource_id: str) -> StoredResource:
        if resource_type == "Subscription":
            return self._subscriptions().read(tenant, resource_type, resource_id)
        self._check_type(resource_type)
        hub_id = self._hub_id(resource_type, resource_id)
        content = self._relay(lambda: self.hub.read(resource_type, hub_id))
        return _stored(self.translator.reidentify(content))

    def _hub_id(self, resource_type: str, resource_id: str) -> str:
        if resource_type == "ImagingStudy":
            return self.translator.pseudo_uid(resource_id)
        if resource_type == "Patient":
            patient = self.translator.identities.patient_by_fhir_id(resource_id, at_hub=False)
            if patient is None:
                raise NotFound(f"Patient/{resource_id} is not known")
            return hub_patient_id(patient.pseudo_id)
        return resource_id

    # -- search -------------------------------------------------------------------------

    def search(self, tenant: str, query: SearchQuery) -> SearchResult:
        kind = query.resource_type
        if kind == "Subscription":
            return self._subscriptions().search(tenant, query)
        self._check_type(kind)
        hub_search = self.translator.pseudonymise_search(query)
        if hub_search is None:
            return SearchResult(total=0)
        if hub_search.post_filter is None:
            bundle = self._relay(lambda: self.hub.search(kind, hub_search.params))
            return self._result(self.translator.reidentify(bundle))
        matches: list[StoredResource] = []
        included: dict[str, StoredResource] = {}
        offset = 0
        while offset < MAX_FILTERED:
            params = [*hub_search.params, ("_count", str(MAX_COUNT)), ("_offset", str(offset))]
            page = self._result(
                self.translator.reidentify(self._relay(lambda p=params: self.hub.search(kind, p)))
            )
            for stored in page.matches:
                if matches_date(hub_search.post_filter, stored.content.get("started")):
                    matches.append(stored)
            for stored in page.included:
                included[f"{stored.resource_type}/{stored.resource_id}"] = stored
            offset += MAX_COUNT
            if offset >= page.total:
                break
        total = len(matches)
        if query.summary_count:
            return SearchResult(total=total)
        window = matches[query.offset : query.offset + query.count]
        referenced = _references(s.content for s in window)
        return SearchResult(
            total=total,
            matches=window,
            included=[s for key, s in included.items() if key in referenced],
        )

    @staticmethod
    def _result(bundle: Resource) -> SearchResult:
        matches: list[StoredResource] = []
        included: list[StoredResource] = []
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource")
            mode = (entry.get("search") or {}).get("mode", "match")
            if not isinstance(resource, dict) or mode == "outcome":
                continue
            (included if mode == "include" else matches).append(_stored(resource))
        total = bundle.get("total")
        return SearchResult(
            total=total if isinstance(total, int) else len(matches),
            matches=matches,
            included=included,
        )

    # -- create, update, delete ---------------------------------------------------------

    def create(
        self, tenant: str, resource: Resource, *, if_none_exist: SearchQuery | None = None
    ) -> WriteResult:
        kind = str(resource.get("resourceType"))
        if kind == "Subscription":
            return self._subscriptions().create(tenant, resource, if_none_exist=if_none_exist)
        if kind not in CREATE_TYPES:
            raise InvalidRequest(f"create is not supported for {kind} at the gateway")
        condition: str | None = None
        if if_none_exist is not None:
            hub_search = self.translator.pseudonymise_search(if_none_exist)
            if hub_search is not None and hub_search.post_filter is None:
                params = [(n, v) for n, v in hub_search.params if n not in {"_count", "_offset"}]
                condition = urlencode(params)
        self.translator.remember(resource)
        body = self.translator.pseudonymise_resource(resource)
        status, created = self._relay(lambda: self.hub.create(body, if_none_exist=condition))
        return WriteResult(_stored(self.translator.reidentify(created)), created=status == 201)

    def update(
        self, tenant: str, resource: Resource, *, if_match: int | None = None
    ) -> WriteResult:
        kind = str(resource.get("resourceType"))
        if kind == "Subscription":
            return self._subscriptions().update(tenant, resource, if_match=if_match)
        if kind != "Task":
            raise InvalidRequest(f"update is not supported for {kind} at the gateway")
        self.translator.remember(resource)
        body = self.translator.pseudonymise_resource(resource)
        etag = f'W/"{if_match}"' if if_match is not None else None
        status, updated = self._relay(lambda: self.hub.update(body, if_match=etag))
        return WriteResult(_stored(self.translator.reidentify(updated)), created=status == 201)

    def delete(self, tenant: str, resource_type: str, resource_id: str) -> None:
        if resource_type == "Subscription":
            self._subscriptions().delete(tenant, resource_type, resource_id)
            return
        raise InvalidRequest(f"delete is not supported for {resource_type} at the gateway")

    # -- helpers ------------------------------------------------------------------------

    def _subscriptions(self) -> FhirBackend:
        if self.subscriptions is None:  # B's relay not wired (no ``fhir:`` section)
            raise NotFound("Subscriptions are not relayed by this gateway")
        return self.subscriptions

    @staticmethod
    def _check_type(resource_type: str) -> None:
        if resource_type not in GATEWAY_TYPES:
            raise NotFound(f"{resource_type} is not served by the gateway")

    def _relay(self, call: Any) -> Any:
        """Run a hub call; a 4xx comes back with the hub's OperationOutcome re-identified
        (or, if it cannot be, one that names no pseudonym)."""
        try:
            return call()
        except UpstreamRefused as exc:
            body = exc.body
            try:
                body = self.translator.reidentify(body) if body is not None else None
            except Unidentifiable:
                body = outcome("processing", f"The hub refused the request ({exc.status_code})")
            reason = _diagnostics(body) or exc.reason
            raise UpstreamRefused(reason, status_code=exc.status_code, body=body) from exc


def _diagnostics(body: Resource | None) -> str:
    issues = (body or {}).get("issue") or []
    return "; ".join(str(i.get("diagnostics") or "") for i in issues if isinstance(i, dict))


def _references(resources: Any) -> set[str]:
    """``Type/id`` of every literal reference in ``resources``."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            key = reference_key(ref) if isinstance(ref, str) else None
            if key:
                found.add(key)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for resource in resources:
        walk(resource)
    return found


__all__ = ["GATEWAY_TYPES", "GatewayFhirBackend", "HubFhirClient", "SqlFhirIdentities"]
