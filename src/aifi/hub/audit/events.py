"""What one audit record says, and that record as a FHIR R4 AuditEvent: pure code, no I/O.

The vocabulary follows the IHE Basic Audit Log Patterns (BALP, IHE ITI supplement, built on
FHIR AuditEvent) and, for the DICOMweb services, the DICOM audit events of PS3.15 A.5.3
(DCM codes in PS3.16 CID 400):

================== ============ ====== =========================================================
access              event code  action  FHIR ``AuditEvent.type`` / ``subtype``
================== ============ ====== =========================================================
FHIR interaction    ``rest``      CRUDE  audit-event-type#rest / restful-interaction (read, ...)
STOW-RS             DCM 110104    C      DICOM Instances Transferred / ``STOW-RS``
QIDO-RS, searches   DCM 110112    E      Query (BALP Query pattern: ``entity.query``) / service
WADO-RS, reads      DCM 110103    R      DICOM Instances Accessed / ``WADO-RS``, ``UPS-RS``, ...
UPS-RS changes      DCM 110103    C/U/E  DICOM Instances Accessed / ``UPS-RS``
PACS delivery       DCM 110104    R      DICOM Instances Transferred / ``PACS delivery`` (export)
EPD push, notify    DCM 110106    R      Export / ``EPD push``, ``subscription notification``
================== ============ ====== =========================================================

``AuditEvent.outcome`` (R4 audit-event-outcome): ``0`` success, ``4`` minor failure (the
request was refused or not found: HTTP 4xx, a delivery to be retried), ``8`` serious failure
(HTTP 5xx, a delivery given up), ``12`` major failure (not used by the hub).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aifi.clock import utc_now
from aifi.fhir import mapping
from aifi.fhir.codes import DCM, patient_id_system, uid_identifier
from aifi.fhir.resources import validated
from aifi.fhir.types import Resource
from aifi.fhir.views import PatientView

AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
AUDIT_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
SECURITY_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
SUBTYPE_SYSTEM = "urn:aifi:audit-subtype"
"""The DICOMweb service or export channel of a DICOM audit event (no standard system)."""
CLIENT_SYSTEM = "urn:aifi:oauth-client"
"""``agent.who.identifier`` of the OAuth2 client that asked (its ``client_id``)."""
ROLE_SYSTEM = "urn:aifi:client-role"

ACCESSED = "110103"
TRANSFERRED = "110104"
EXPORT = "110106"
QUERY = "110112"
REST = "rest"
DCM_EVENTS: dict[str, str] = {
    ACCESSED: "DICOM Instances Accessed",
    TRANSFERRED: "DICOM Instances Transferred",
    EXPORT: "Export",
    QUERY: "Query",
}
"""DICOM audit Event IDs (PS3.15 A.5.3, PS3.16 CID 400)."""

SOURCE_ROLE = ("110153", "Source Role ID")
DESTINATION_ROLE = ("110152", "Destination Role ID")
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
"""Study Root Query/Retrieve Information Model - FIND: the SOP class a QIDO-RS search is
recorded as (PS3.15 A.5.3.12 Query: ParticipantObjectID is the SOP Class UID)."""

UNKNOWN = "unknown"
"""``who`` when the caller could not be identified (no or a bad token)."""

_ACTION_CODES: dict[str, str] = {
    "create": "C",
    "read": "R",
    "search": "E",
    "update": "U",
    "delete": "D",
    "execute": "E",
    "export": "R",
}
_FHIR_SUBTYPES: dict[str, str] = {
    "create": "create",
    "read": "read",
    "search": "search-type",
    "update": "update",
    "delete": "delete",
}


def outcome_of_status(status: int | None) -> int:
    """FHIR AuditEvent.outcome of an HTTP status: 0 (2xx/3xx), 4 (4xx), 8 (5xx or none)."""
    if status is None or status >= 500:
        return 8
    return 4 if status >= 400 else 0


def classify(method: str, path: str, interaction: str) -> tuple[str, str, str]:
    """``(event code, subtype, action code)`` of an access to ``method path`` (the route's
    path template) with the policy's audit ``interaction`` (module docstring table)."""
    action = _ACTION_CODES.get(interaction, "E")
    if path.startswith("/fhir/"):
        if "/_history/" in path:
            subtype = "vread"
        elif path.endswith("/_search"):
            subtype = "search-type"
        else:
            subtype = _FHIR_SUBTYPES.get(interaction, "operation")
        if method == "PATCH":
            subtype = "patch"
        return REST, subtype, action
    if path.startswith("/dicomweb/workitems") or path.startswith("/dicomweb/subscribers"):
        service = "UPS-RS"
    elif path.startswith("/dicomweb/"):
        service = {"create": "STOW-RS", "search": "QIDO-RS"}.get(interaction, "WADO-RS")
    else:
        service = "aifi-api"
    if interaction == "search":
        return QUERY, service, action
    if interaction == "create" and service == "STOW-RS":
        return TRANSFERRED, service, action
    return ACCESSED, service, action


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit record (the ``audit_event`` row without its key)."""

    action: str
    interaction: str
    event_code: str
    subtype: str
    outcome: int
    client_id: str
    recorded_at: datetime = field(default_factory=utc_now)
    """When; whoever builds an entry passes its injected clock's time (the default is
    for tests and one-off records)."""
    tenant: str | None = None
    role: str = ""
    address: str | None = None
    method: str = ""
    path: str = ""
    http_status: int | None = None
    patient_id: str | None = None
    patient_issuer: str | None = None
    study_uid: str | None = None
    entities: tuple[dict[str, str], ...] = ()
    """``{"kind": "workitem"|"series"|"instance"|"study"|"fhir"|"destination"|...,
    "id": ..., ...}``: what else was touched."""
    query: str | None = None

    @property
    def entity_json(self) -> str:
        return json.dumps(list(self.entities), separators=(",", ":"))

    @staticmethod
    def entities_of(text: str | None) -> tuple[dict[str, str], ...]:
        value = json.loads(text or "[]")
        return tuple(v for v in value if isinstance(v, dict)) if isinstance(value, list) else ()

    @property
    def is_export(self) -> bool:
        return self.interaction == "export"

    @property
    def destination(self) -> dict[str, str] | None:
        return next((e for e in self.entities if e.get("kind") == "destination"), None)


def _code(system: str, code: str, display: str | None = None) -> dict[str, str]:
    result = {"system": system, "code": code}
    if display:
        result["display"] = display
    return result


def _client_agent(entry: AuditEntry, *, requestor: bool) -> Resource:
    agent: Resource = {
        "type": {"coding": [_code(DCM, *(SOURCE_ROLE if requestor else DESTINATION_ROLE))]},
        "who": {"display": entry.client_id},
        "requestor": requestor,
    }
    if entry.client_id != UNKNOWN:
        agent["who"]["identifier"] = {"system": CLIENT_SYSTEM, "value": entry.client_id}
    if entry.role:
        agent["role"] = [{"coding": [_code(ROLE_SYSTEM, entry.role)]}]
    if entry.address:
        agent["network"] = {"address": entry.address, "type": "2"}
    return agent


def _agents(entry: AuditEntry, source_id: str) -> list[Resource]:
    """BALP: the client (requestor, network address) and the server; for an export the hub
    is the source and the destination (PACS, EPD, subscriber) the other agent."""
    hub: Resource = {"who": {"display": source_id}}
    if entry.is_export:
        hub["type"] = {"coding": [_code(DCM, *SOURCE_ROLE)]}
        hub["requestor"] = True
        target = entry.destination or {}
        other: Resource = {
            "type": {"coding": [_code(DCM, *DESTINATION_ROLE)]},
            "who": {"display": target.get("id") or entry.client_id},
            "requestor": False,
        }
        if target.get("address"):
            other["network"] = {"address": target["address"][:200], "type": "5"}
        return [hub, other]
    hub["type"] = {"coding": [_code(DCM, *DESTINATION_ROLE)]}
    hub["requestor"] = False
    return [_client_agent(entry, requestor=True), hub]


def _entity_type(code: str, display: str) -> dict[str, str]:
    return _code(AUDIT_ENTITY_TYPE, code, display)


def _entities(entry: AuditEntry) -> list[Resource]:
    entities: list[Resource] = []
    if entry.patient_id:
        view = PatientView(patient_id=entry.patient_id, issuer=entry.patient_issuer)
        entities.append(
            {
                "what": mapping.patient_reference(view),
                "type": _entity_type("1", "Person"),
                "role": _code(OBJECT_ROLE, "1", "Patient"),
            }
        )
    studies = [entry.study_uid] if entry.study_uid else []
    studies += [e["id"] for e in entry.entities if e.get("kind") == "study" and e.get("id")]
    for uid in dict.fromkeys(studies):
        entities.append(
            {
                "what": {"reference": f"ImagingStudy/{uid}", "identifier": uid_identifier(uid)},
                "type": _entity_type("2", "System Object"),
                "role": _code(OBJECT_ROLE, "3", "Report"),
                "name": "Study Instance UID",
            }
        )
    for item in entry.entities:
        kind, value = item.get("kind", ""), item.get("id", "")
        if not value or kind in ("study", "destination"):
            continue
        what: Resource
        if kind == "fhir":
            what = {"reference": f"{item.get('type')}/{value}"}
            name = None
        else:
            what = {"identifier": uid_identifier(value)} if kind != "count" else {}
            name = {
                "workitem": "UPS workitem",
                "series": "Series Instance UID",
                "instance": "SOP Instance UID",
                "subscription": "Subscription",
            }.get(kind, kind)
            if kind == "subscription":
                what = {"reference": f"Subscription/{value}"}
        if not what:
            continue
        entity: Resource = {
            "what": what,
            "type": _entity_type("2", "System Object"),
            "role": _code(OBJECT_ROLE, "4", "Domain Resource"),
        }
        if name:
            entity["name"] = name
        entities.append(entity)
    if entry.interaction == "search":
        query_entity: Resource = {
            "type": _entity_type("2", "System Object"),
            "role": _code(OBJECT_ROLE, "24", "Query"),
            "description": f"{entry.method} {entry.path}",
        }
        if entry.query:  # FHIR forbids empty elements: a search without parameters has none
            query_entity["query"] = base64.b64encode(entry.query.encode()).decode()
        entities.append(query_entity)
    return entities


def audit_event_resource(
    entry: AuditEntry, resource_id: str, *, source_id: str = "aifi-hub"
) -> Resource:
    """The FHIR R4 AuditEvent of one record, following BALP (module docstring): ``type``
    and ``subtype``, ``action``, ``recorded``, ``outcome``, the agents (who asked, from which
    address, and the hub), ``source`` (the hub, site = tenant) and the entities (patient,
    study, the resource or workitem, and the query of a search)."""
    if entry.event_code == REST:
        event_type = _code(AUDIT_EVENT_TYPE, REST, "RESTful Operation")
        subtype = _code(RESTFUL_INTERACTION, entry.subtype)
    else:
        event_type = _code(DCM, entry.event_code, DCM_EVENTS.get(entry.event_code))
        subtype = _code(SUBTYPE_SYSTEM, entry.subtype)
    resource: Resource = {
        "resourceType": "AuditEvent",
        "id": resource_id,
        "type": event_type,
        "subtype": [subtype],
        "action": entry.action,
        "recorded": entry.recorded_at.astimezone(UTC).isoformat(timespec="milliseconds"),
        "outcome": str(entry.outcome),
        "agent": _agents(entry, source_id),
        "source": {
            "site": entry.tenant or UNKNOWN,
            "observer": {"display": source_id},
            "type": [_code(SECURITY_SOURCE_TYPE, "4", "Application Server")],
        },
    }
    if entry.http_status is not None:
        resource["outcomeDesc"] = f"HTTP {entry.http_status} ({entry.method} {entry.path})"
    elif entry.is_export and entry.destination and entry.destination.get("error"):
        resource["outcomeDesc"] = entry.destination["error"][:1000]
    entities = _entities(entry)
    if entities:
        resource["entity"] = entities
    return validated(resource)


def patient_of_identifier(identifier: Any) -> tuple[str, str | None] | None:
    """``(Patient ID, issuer)`` of a FHIR Identifier in the hub's patient system
    (:func:`aifi.fhir.codes.patient_id_system`), else None."""
    if not isinstance(identifier, dict) or not identifier.get("value"):
        return None
    system = str(identifier.get("system") or "")
    base = patient_id_system(None)
    if system == base:
        return str(identifier["value"]), None
    if system.startswith(base + ":"):
        return str(identifier["value"]), system[len(base) + 1 :]
    return None


def patient_ref(patient_id: str, issuer: str | None) -> str:
    """The FHIR Patient id of a Patient ID (and its issuer): the ``patient_ref`` column, the
    key of ``AuditEvent?patient=Patient/…`` searches."""
    return mapping.patient_id(PatientView(patient_id, issuer))


__all__ = [
    "ACCESSED",
    "DCM_EVENTS",
    "EXPORT",
    "QUERY",
    "REST",
    "STUDY_ROOT_FIND",
    "TRANSFERRED",
    "UNKNOWN",
    "AuditEntry",
    "audit_event_resource",
    "classify",
    "outcome_of_status",
    "patient_of_identifier",
    "patient_ref",
]
