"""Identifier systems and code systems of the hub's FHIR R4 resources.

One place for every URI the resources carry, so that the mapping (:mod:`aifi.fhir.mapping`),
the search index (:mod:`aifi.fhir.search`) and the EPD requests (``aifi.hub.fhir.requests``)
agree on them.

- Identifiers: DICOM UIDs as ``urn:dicom:uid`` with ``urn:oid:`` values (FHIR R4
  imagingstudy.html, "ImagingStudy.identifier": "the DICOM Study Instance UID is encoded
  with the system ``urn:dicom:uid`` and the value ``urn:oid:<uid>``"; the same convention for
  the workitem SOP Instance UID on Task and DiagnosticReport); the hub's own products,
  patients, observations and business states under ``urn:aifi:``.
- Code systems: DICOM coded entries ``(value, scheme designator, meaning)`` become FHIR
  Codings with the system HL7 names for the scheme (FHIR R4 terminologies-systems.html:
  SNOMED CT, LOINC, UCUM, DICOM; DICOM PS3.16 §8 "Coding Scheme Designators").
"""

from __future__ import annotations

from typing import Any

PRODUCT_SYSTEM = "urn:aifi:product"
"""The hub's AI product codes (e.g. ``AIFI-BONEAGE``): Task.code, DiagnosticReport.code,
Device.identifier."""
DICOM_UID_SYSTEM = "urn:dicom:uid"
"""DICOM UIDs; the identifier value is ``urn:oid:<uid>`` (see :func:`uid_identifier`)."""
PATIENT_ID_SYSTEM = "urn:aifi:patient-id"
"""Patient ID (0010,0020) without an issuer; with Issuer of Patient ID (0010,0021) the
system is ``urn:aifi:patient-id:<issuer>`` (see :func:`patient_id_system`)."""
OBSERVATION_ID_SYSTEM = "urn:aifi:observation"
"""Observation.identifier; the value is the Observation's id."""
BUSINESS_STATUS_SYSTEM = "urn:aifi:business-status"
"""Task.businessStatus codes of the hub (task.html: "the domain-specific business-contextual
sub-state of the task"): see :data:`BUSINESS_STATUS`."""

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
RFC3986 = "urn:ietf:rfc:3986"
"""ImagingStudy.series.instance.sopClass: the SOP Class UID as a URI (``urn:oid:``)."""

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
"""Identifier type (``ACSN`` accession number)."""
V2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
"""Diagnostic service section (``RAD``): DiagnosticReport.category."""
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
OBSERVATION_INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
PROVENANCE_PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
ENDPOINT_CONNECTION_TYPE = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
COMMUNICATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"
"""Communication.category (``alert`` for an urgent finding; communication.html)."""
TENANT_SYSTEM = "urn:aifi:tenant"
"""The hospital (the hub's tenant id): the identifier of a logical Organization reference
(Communication.recipient)."""

BUSINESS_STATUS: dict[str, str] = {
    "waiting-for-study": "Waiting for the study",
    "awaiting-review": "Result awaiting review",
    "accepted": "Result accepted by the reviewer",
    "rejected": "Result rejected by the reviewer",
    "released": "Result released without review",
    "delivered": "Result delivered to the PACS",
}
"""Code → display of :data:`BUSINESS_STATUS_SYSTEM`."""

_SCHEMES: dict[str, str] = {
    "SCT": SCT,
    "LN": LOINC,
    "DCM": DCM,
    "UCUM": UCUM,
}


def fhir_system(designator: str) -> str:
    """The FHIR code system of a DICOM Coding Scheme Designator (PS3.16 §8; FHIR R4
    terminologies-systems.html); designators without an HL7-registered URI become
    ``urn:dicom:scheme:<designator>``."""
    return _SCHEMES.get(designator) or f"urn:dicom:scheme:{designator}"


def coding(code: tuple[str, str, str]) -> dict[str, Any]:
    """A FHIR Coding of a DICOM coded entry ``(value, scheme designator, meaning)``."""
    value, designator, meaning = code
    result: dict[str, Any] = {"system": fhir_system(designator), "code": value}
    if meaning:
        result["display"] = meaning
    return result


def concept(code: tuple[str, str, str]) -> dict[str, Any]:
    """A CodeableConcept of a DICOM coded entry; text only when there is no code value
    (a result whose code the hub could not read)."""
    value, _designator, meaning = code
    result: dict[str, Any] = {"coding": [coding(code)]} if value else {}
    if meaning:
        result["text"] = meaning
    return result


def uid_identifier(uid: str) -> dict[str, str]:
    """A DICOM UID as a FHIR Identifier (imagingstudy.html, ImagingStudy.identifier)."""
    return {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}


def patient_id_system(issuer: str | None) -> str:
    """The identifier system of a Patient ID with its Issuer of Patient ID."""
    return f"{PATIENT_ID_SYSTEM}:{issuer}" if issuer else PATIENT_ID_SYSTEM


def accession_identifier(accession_number: str) -> dict[str, Any]:
    """An Accession Number (0008,0050) as an Identifier of type ``ACSN`` (v2-0203); no
    system (the hub does not know the issuer)."""
    return {
        "type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
        "value": accession_number,
    }
