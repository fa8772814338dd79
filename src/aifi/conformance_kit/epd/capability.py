"""Cases ``metadata`` and ``types.<Type>``: what the EPD says it does (FHIR R4
http.html#capabilities: ``GET [base]/metadata`` answers the CapabilityStatement,
capabilitystatement.html).

* ``metadata`` — a CapabilityStatement for FHIR 4.0.x (the hub speaks R4 4.0.1) whose server
  ``rest`` lists the system interaction ``transaction`` (the push is one transaction).
* ``types.<Type>`` — one case per resource type the push creates (DiagnosticReport,
  Observation): the type is listed with the ``create`` interaction. ``conditionalCreate``
  false is a warning (the push depends on ``ifNoneExist``; ``push.idempotent`` shows whether
  it works); the profiles it declares (``profile``, ``supportedProfile``) and whether it
  searches by ``identifier`` are evidence. Types the push names only by logical reference
  (Patient) are evidence of ``metadata``: the EPD need not hold them.
"""

from __future__ import annotations

from typing import Any

import httpx

from aifi.conformance_kit.epd.client import Exchanges
from aifi.conformance_kit.report import Case, Report
from aifi.fhir.epd_client import FHIR_JSON

CAPABILITIES = "FHIR R4 http.html#capabilities"
STATEMENT = "FHIR R4 capabilitystatement.html"


def _server_rest(statement: dict[str, Any]) -> dict[str, Any]:
    for rest in statement.get("rest") or []:
        if isinstance(rest, dict) and rest.get("mode") == "server":
            return rest
    return {}


def _codes(items: object) -> list[str]:
    return [
        str(item.get("code"))
        for item in (items if isinstance(items, list) else [])
        if isinstance(item, dict)
    ]


def _resource(rest: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for resource in rest.get("resource") or []:
        if isinstance(resource, dict) and resource.get("type") == kind:
            return resource
    return None


def read_statement(
    case: Case, fhir: httpx.Client, exchanges: Exchanges, base: str, referenced: list[str]
) -> dict[str, Any] | None:
    """Check ``metadata`` (module docstring) into ``case``; the CapabilityStatement when
    there is one."""
    response = fhir.get(f"{base}/metadata", headers={"Accept": FHIR_JSON})
    seen = exchanges.last()
    evidence = seen.evidence() if seen is not None else {"status": response.status_code}
    statement = seen.body if seen is not None else None
    if response.status_code != 200 or not isinstance(statement, dict):
        case.failed(f"GET [base]/metadata answered {response.status_code}", **evidence)
        return None
    if statement.get("resourceType") != "CapabilityStatement":
        case.failed(
            f"GET [base]/metadata answered a {statement.get('resourceType')}, not a "
            "CapabilityStatement",
            **evidence,
        )
        return None
    rest = _server_rest(statement)
    version = str(statement.get("fhirVersion") or "")
    interactions = _codes(rest.get("interaction"))
    software = statement.get("software") or {}
    case.note(
        fhirVersion=version,
        software=f"{software.get('name', '')} {software.get('version', '')}".strip(),
        format=statement.get("format"),
        system_interactions=interactions,
        types=[r.get("type") for r in rest.get("resource") or [] if isinstance(r, dict)],
        referenced_by_identifier_only={
            kind: _resource(rest, kind) is not None for kind in referenced
        },
    )
    if not version.startswith("4.0."):
        case.failed(f"fhirVersion is {version or 'missing'}, not 4.0.x (FHIR R4)", **evidence)
    elif "transaction" not in interactions:
        case.failed(
            "the server's rest.interaction does not list 'transaction'; the push is one "
            "transaction Bundle",
            **evidence,
        )
    else:
        case.passed(f"CapabilityStatement for FHIR {version} with 'transaction'", **evidence)
    return statement


def check_type(case: Case, statement: dict[str, Any], kind: str) -> None:
    """Check ``types.<kind>`` (module docstring) into ``case``."""
    resource = _resource(_server_rest(statement), kind)
    if resource is None:
        case.failed(f"{kind} is not among the CapabilityStatement's resources; the push creates it")
        return
    interactions = _codes(resource.get("interaction"))
    profiles = [resource["profile"]] if resource.get("profile") else []
    profiles += list(resource.get("supportedProfile") or [])
    params = [p.get("name") for p in resource.get("searchParam") or [] if isinstance(p, dict)]
    evidence = {
        "interactions": interactions,
        "conditionalCreate": resource.get("conditionalCreate"),
        "profiles": profiles,
        "search_by_identifier": "identifier" in params,
    }
    if "create" not in interactions:
        case.failed(f"{kind} is listed without the 'create' interaction", **evidence)
    elif resource.get("conditionalCreate") is False:
        case.warned(
            f"{kind} create is listed but conditionalCreate is false; the push relies on "
            "ifNoneExist (see push.idempotent)",
            **evidence,
        )
    else:
        declared = f"; profiles: {', '.join(profiles)}" if profiles else ""
        case.passed(f"{kind}: create{declared}", **evidence)


def capability_cases(
    report: Report,
    fhir: httpx.Client,
    exchanges: Exchanges,
    base: str,
    created: list[str],
    referenced: list[str],
) -> None:
    """The cases ``metadata`` and ``types.<Type>`` for each type in ``created``."""
    metadata = report.case(
        "metadata",
        "The EPD's CapabilityStatement: FHIR R4 and the transaction interaction",
        [CAPABILITIES, STATEMENT, "FHIR R4 http.html#transaction"],
    )
    statement = None
    with metadata.timed():
        statement = read_statement(metadata, fhir, exchanges, base, referenced)
    for kind in created:
        case = report.case(
            f"types.{kind}",
            f"The EPD accepts {kind} (create, conditional create)",
            [STATEMENT, "FHIR R4 http.html#ccreate"],
        )
        if statement is None:
            case.skipped("no CapabilityStatement to read (see metadata)")
            continue
        with case.timed():
            check_type(case, statement, kind)


__all__ = ["capability_cases", "check_type", "read_statement"]
