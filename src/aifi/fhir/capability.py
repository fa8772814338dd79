"""What the FHIR server does, in one table (:data:`INTERACTIONS`), and the
CapabilityStatement built from it and from :data:`aifi.fhir.search.SEARCH_PARAMS`
(FHIR R4 capabilitystatement.html, http.html#capabilities).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import aifi
from aifi.fhir.search import SEARCH_PARAMS
from aifi.fhir.types import Resource

_READ_SEARCH = frozenset({"read", "vread", "search-type"})

INTERACTIONS: Mapping[str, frozenset[str]] = {
    "Task": _READ_SEARCH | {"create", "update"},
    "ImagingStudy": _READ_SEARCH,
    "DiagnosticReport": _READ_SEARCH,
    "Observation": _READ_SEARCH,
    "Communication": _READ_SEARCH,
    "Device": _READ_SEARCH,
    "Provenance": _READ_SEARCH,
    "Patient": _READ_SEARCH,
    "ServiceRequest": _READ_SEARCH | {"create"},
    "Subscription": _READ_SEARCH | {"create", "update", "delete"},
    "AuditEvent": _READ_SEARCH,
}
"""Type → supported interactions (restful-interaction codes). ``vread`` answers the current
version only (no history is kept)."""

CONDITIONAL_CREATE = frozenset({"Task", "ServiceRequest"})

_DOCUMENTATION: Mapping[str, str] = {
    "Task": (
        "One Task per AI workitem (IHE AIW-I UPS ↔ Task), kept by the hub. An EPD requests "
        "AI by creating a Task (focus: the ImagingStudy or its accession; code: the product) "
        "and may update its own Task only to cancel it (status 'cancelled')."
    ),
    "DiagnosticReport": "One report per AI result; its Observations are the findings.",
    "Observation": "Findings and measurements of an AI result.",
    "Communication": (
        "One Communication per urgent AI finding (communication.html): status completed, "
        "priority urgent, category alert, about the DiagnosticReport and the ImagingStudy, "
        "recipient the hospital (Organization by identifier urn:aifi:tenant), payload the "
        "finding in words. 'about' and 'priority' are search parameters of the hub (not "
        "defined by R4)."
    ),
    "ImagingStudy": "Studies the hub routed to AI (identifier: urn:dicom:uid / accession).",
    "Device": "The AI products (identifier system urn:aifi:product).",
    "Provenance": "Who produced and who reviewed an AI result.",
    "Patient": "Identifier-only patients of the routed studies.",
    "ServiceRequest": "An EPD's orders, stored as given, for Task.basedOn.",
    "Subscription": (
        "R4 Subscription with the R5 Subscriptions Backport IG notifications: channel type "
        "rest-hook only; payload application/fhir+json; the Backport IG extension "
        "backport-payload-content chooses id-only, full-resource or empty. Criteria: a search "
        "on Task, DiagnosticReport, Observation, ImagingStudy or Communication."
    ),
    "AuditEvent": (
        "The audit trail (IHE Basic Audit Log Patterns): one AuditEvent per access to "
        "patient-related data through any API (FHIR, DICOMweb, UPS-RS, the hub's API) and per "
        "export (PACS delivery, EPD push, notification); who (agent: client id, role, network "
        "address), what (type/subtype, action, entity: patient, study, resource, query), when, "
        "outcome. Read and search only: the trail is append-only (create, update and delete "
        "answer 405). Needs the scope system/AuditEvent.rs (administrators)."
    ),
}


def resource_capability(resource_type: str) -> Resource:
    """One ``rest.resource`` entry."""
    interactions = INTERACTIONS[resource_type]
    params = SEARCH_PARAMS.get(resource_type, {})
    entry: Resource = {
        "type": resource_type,
        "documentation": _DOCUMENTATION[resource_type],
        "interaction": [
            {"code": code}
            for code in ("read", "vread", "update", "delete", "create", "search-type")
            if code in interactions
        ],
        "versioning": "versioned",
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": resource_type in CONDITIONAL_CREATE,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
    }
    includes = [f"{resource_type}:{p.name}" for p in params.values() if p.kind == "reference"]
    if includes:
        entry["searchInclude"] = includes
    entry["searchParam"] = [
        {
            "name": param.name,
            "type": param.kind,
            "documentation": f"{param.description} ({param.expression(resource_type)})",
        }
        for param in params.values()
    ]
    if resource_type == "Subscription":
        entry["operation"] = [
            {
                "name": "status",
                "definition": (
                    "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/"
                    "backport-subscription-status"
                ),
                "documentation": "GET [base]/Subscription/{id}/$status: the SubscriptionStatus.",
            }
        ]
    return entry


def _security(token_url: str | None) -> Resource:
    """``rest.security``: OAuth2 (SMART App Launch 2.x §Conformance, the ``oauth-uris``
    extension naming the token endpoint when the hub is the authorization server)."""
    security: Resource = {
        "service": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ],
        "description": (
            "OAuth2 bearer tokens (SMART Backend Services, client_credentials); SMART v2 "
            "system scopes system/<Type>.<cruds>; discovery at .well-known/smart-configuration."
        ),
    }
    if token_url:
        security["extension"] = [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": token_url}],
            }
        ]
    return security


def capability_statement(base_url: str, token_url: str | None = None) -> Resource:
    """The server's CapabilityStatement (``GET [base]/metadata``, http.html#capabilities)."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "publisher": "aifi-hub",
        "kind": "instance",
        "software": {"name": "aifi-hub", "version": aifi.__version__},
        "implementation": {"description": "aifi-hub FHIR R4 API", "url": base_url},
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Search: comma = OR, repeated parameter = AND; modifiers :not (token), "
                    ":identifier and :[type] (reference), :exact and :contains (string), "
                    ":missing; date prefixes eq ne gt lt ge le sa eb (ap as eq). Paging with "
                    "_count (max 500) and _offset. Unknown parameters are ignored and reported "
                    "unless Prefer: handling=strict."
                ),
                "security": _security(token_url),
                "resource": [resource_capability(t) for t in INTERACTIONS],
            }
        ],
    }
