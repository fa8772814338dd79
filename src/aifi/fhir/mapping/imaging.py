"""Patient (identifier only), Device (the AI product) and ImagingStudy (a stored study with its
WADO-RS Endpoint) as FHIR R4 resources (patient.html, device.html, imagingstudy.html).
"""

from __future__ import annotations

import hashlib
from typing import Any

from aifi.fhir.codes import (
    DCM,
    ENDPOINT_CONNECTION_TYPE,
    PRODUCT_SYSTEM,
    RFC3986,
    accession_identifier,
    patient_id_system,
    uid_identifier,
)
from aifi.fhir.mapping.elements import fhir_datetime
from aifi.fhir.types import Resource
from aifi.fhir.views import PatientView, ProductView, SeriesView, StudyView

WADO_ENDPOINT_ID = "wado"
"""Id of the ImagingStudy's contained WADO-RS Endpoint (referenced as ``#wado``)."""


# -- Patient, Device, ImagingStudy -------------------------------------------------------


def patient_id(p: PatientView) -> str:
    """The Patient's resource id: ``pat-`` + 24 hex digits of SHA-256 over
    ``"<issuer>|<Patient ID>"`` — stable, a valid FHIR id, and not the Patient ID itself
    (which may hold characters an id cannot)."""
    digest = hashlib.sha256(f"{p.issuer or ''}|{p.patient_id}".encode()).hexdigest()
    return "pat-" + digest[:24]


def _patient_identifier(p: PatientView) -> dict[str, str]:
    return {"system": patient_id_system(p.issuer), "value": p.patient_id}


def patient_reference(p: PatientView) -> dict[str, Any]:
    """A reference to the Patient that also carries its identifier (references.html#logical),
    so that ``patient:identifier`` searches work and a client can match the patient without
    reading the Patient."""
    reference: dict[str, Any] = {"reference": f"Patient/{patient_id(p)}"}
    if p.patient_id:
        reference["identifier"] = _patient_identifier(p)
    return reference


def patient(p: PatientView) -> Resource:
    """The Patient: id and identifier only (the hub keeps no demographics in FHIR;
    patient.html)."""
    resource: Resource = {"resourceType": "Patient", "id": patient_id(p)}
    if p.patient_id:
        resource["identifier"] = [_patient_identifier(p)]
    return resource


def device(p: ProductView) -> Resource:
    """The AI product as a Device (device.html; DICOM SR IG: TID 4019 Algorithm
    Identification → Device): identifiers = product code and, when a result named it, the
    Device UID (0018,1002); names = product name (user-friendly) and algorithm model name;
    versions = the product version and Software Versions (0018,1020) of its results."""
    identifiers: list[dict[str, Any]] = [{"system": PRODUCT_SYSTEM, "value": p.code}]
    if p.device_uid:
        identifiers.append(uid_identifier(p.device_uid))
    versions: list[dict[str, Any]] = []
    if p.version:
        versions.append({"value": p.version})
    for software in (p.software_versions or "").split("\\"):
        if software and all(v["value"] != software for v in versions):
            versions.append({"type": {"text": "Software Versions (0018,1020)"}, "value": software})
    mode = (
        "Supervised: a radiologist reviews each result before it is released."
        if p.supervised
        else "Autonomous: results are released without review."
    )
    resource: Resource = {
        "resourceType": "Device",
        "id": p.code,
        "identifier": identifiers,
        "status": "active",
        "deviceName": [
            {"name": p.name, "type": "user-friendly-name"},
            {"name": p.model_name or p.name, "type": "model-name"},
        ],
        "type": {"text": "AI product"},
        "note": [{"text": mode}],
    }
    if p.vendor:
        resource["manufacturer"] = p.vendor
    if versions:
        resource["version"] = versions
    return resource


def _modality(code: str | None) -> dict[str, str]:
    """A DICOM Modality (0008,0060) as a Coding of the DICOM ontology (imagingstudy.html,
    binding to DICOM CID 29); ``OT`` (Other) when the series does not say."""
    return {"system": DCM, "code": code or "OT"}


def imaging_study(s: StudyView) -> Resource:
    """A stored study as an ImagingStudy (FHIR R4 imagingstudy.html).

    Identifiers: the Study Instance UID (``urn:dicom:uid``) and the Accession Number (type
    ACSN). Series and instances as indexed; SOP classes as ``urn:oid:`` URIs
    (``urn:ietf:rfc:3986``). The DICOMweb service is a contained Endpoint of connection type
    ``dicom-wado-rs`` that ``endpoint`` references. R4 requires a subject: without a Patient
    ID the subject is a display-only reference. Body Part Examined is not mapped (R4 wants a
    SNOMED CT Coding; the DICOM-to-SNOMED table of PS3.16 Annex L is not applied)."""
    identifiers: list[dict[str, Any]] = [uid_identifier(s.study_instance_uid)]
    if s.accession_number:
        identifiers.append(accession_identifier(s.accession_number))
    resource: Resource = {"resourceType": "ImagingStudy", "id": s.study_instance_uid}
    if s.wado_rs_base:
        resource["contained"] = [
            {
                "resourceType": "Endpoint",
                "id": WADO_ENDPOINT_ID,
                "status": "active",
                "connectionType": {"system": ENDPOINT_CONNECTION_TYPE, "code": "dicom-wado-rs"},
                "payloadType": [{"text": "DICOM"}],
                "address": s.wado_rs_base,
            }
        ]
    resource["identifier"] = identifiers
    resource["status"] = "available"
    modalities: list[str] = []
    for series in s.series:
        code = series.modality or "OT"
        if code not in modalities:
            modalities.append(code)
    if modalities:
        resource["modality"] = [_modality(m) for m in modalities]
    resource["subject"] = (
        patient_reference(s.patient)
        if s.patient is not None
        else {"display": "Patient not identified by the study"}
    )
    if s.started is not None:
        resource["started"] = fhir_datetime(s.started)
    if s.wado_rs_base:
        resource["endpoint"] = [{"reference": f"#{WADO_ENDPOINT_ID}"}]
    resource["numberOfSeries"] = len(s.series)
    resource["numberOfInstances"] = sum(len(series.instances) for series in s.series)
    if s.description:
        resource["description"] = s.description
    if s.series:
        resource["series"] = [_series(series) for series in s.series]
    return resource


def _series(series: SeriesView) -> dict[str, Any]:
    item: dict[str, Any] = {"uid": series.series_instance_uid}
    if series.series_number is not None:
        item["number"] = series.series_number
    item["modality"] = _modality(series.modality)
    if series.description:
        item["description"] = series.description
    item["numberOfInstances"] = len(series.instances)
    if series.instances:
        item["instance"] = []
        for instance in series.instances:
            entry: dict[str, Any] = {
                "uid": instance.sop_instance_uid,
                "sopClass": {"system": RFC3986, "code": f"urn:oid:{instance.sop_class_uid}"},
            }
            if instance.instance_number is not None:
                entry["number"] = instance.instance_number
            item["instance"].append(entry)
    return item
