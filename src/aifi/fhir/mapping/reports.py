"""A workitem's result as FHIR R4 resources: the DiagnosticReport, one Observation per finding
or measurement (HL7 "DICOM SR to FHIR Resource Mapping" IG, TID 1500 → Observation) and the
Provenance of the report.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aifi.fhir.codes import (
    DATA_OPERATION,
    OBSERVATION_CATEGORY,
    OBSERVATION_ID_SYSTEM,
    OBSERVATION_INTERPRETATION,
    PROVENANCE_PARTICIPANT_TYPE,
    UCUM,
    V2_0074,
    coding,
    concept,
    uid_identifier,
)
from aifi.fhir.mapping.elements import (
    NO_RESULT,
    codeable,
    device_reference,
    fhir_datetime,
    product_concept,
    study_reference,
)
from aifi.fhir.mapping.imaging import patient_reference
from aifi.fhir.types import Resource
from aifi.fhir.views import FindingView, MeasurementView, PatientView, ResultView

# -- results: DiagnosticReport, Observations, Provenance ----------------------------------


def result_status(r: ResultView) -> str:
    """DiagnosticReport/Observation status of a result (diagnosticreport.html; DICOM SR IG:
    an unverified report is preliminary): awaiting review → ``preliminary``; accepted or
    released without review → ``final``; rejected by the reviewer → ``cancelled``."""
    if r.review_state == "awaiting-review":
        return "preliminary"
    if r.review_state == "rejected":
        return "cancelled"
    return "final"


def _issued(r: ResultView) -> datetime | None:
    return r.released_at or r.reviewed_at or r.completed_at


def _reviewed(r: ResultView) -> bool:
    return r.review_state in ("accepted", "rejected") and bool(r.reviewer)


def observation_id(workitem_uid: str, n: int) -> str:
    """The id of a result's ``n``-th Observation: ``<workitem UID>-<n>``. A FHIR id holds at
    most 64 characters (datatypes.html#id) and a UID may have 64 already: when the plain
    form is too long the id is ``obs-`` + 40 hex digits of SHA-256 of the UID + ``-<n>``
    (stable, and still one id per workitem and position)."""
    plain = f"{workitem_uid}-{n}"
    if len(plain) <= 64:
        return plain
    digest = hashlib.sha256(workitem_uid.encode()).hexdigest()[:40]
    return f"obs-{digest}-{n}"


def observation_ids(r: ResultView) -> list[str]:
    """The Observation ids of a result, in :func:`observations` order."""
    if r.outcome in NO_RESULT:
        return []
    count = len(r.findings) + len(r.measurements)
    return [observation_id(r.workitem_uid, n) for n in range(1, count + 1)]


def _conclusion(r: ResultView) -> str | None:
    if r.review_state == "rejected":
        who = r.reviewer or "the reviewer"
        text = f"The AI result was rejected by {who}"
        text += f": {r.review_reason}" if r.review_reason else "."
        if r.summary:
            text += f" (The AI result said: {r.summary})"
        return text
    return r.summary or None


def diagnostic_report(
    r: ResultView,
    *,
    orders: Sequence[str] = (),
    patient: PatientView | None,
    wado_rs_base: str,
) -> Resource | None:
    """The DiagnosticReport of a workitem's result (FHIR R4 diagnosticreport.html, imaging
    report), or None when the outcome is failed/cancelled (nothing was reported).

    ``basedOn`` lists the EPD's orders (``ServiceRequest/<id>`` references, from the
    ``basedOn`` of the EPD's Task): R4 restricts DiagnosticReport.basedOn to CarePlan,
    ImmunizationRecommendation, MedicationRequest, NutritionOrder and ServiceRequest, so the
    Tasks are not listed there — a Task names its report in ``Task.output``, and the
    Provenance names the Tasks (the report's id is the workitem's, as is the hub's Task's).
    ``result`` = the Observations of
    :func:`observations`; ``presentedForm`` = the rendered (WADO-RS ``/rendered``, PS3.18
    §9.5) secondary captures of the result; ``resultsInterpreter`` = the reviewer."""
    if r.outcome in NO_RESULT:
        return None
    resource: Resource = {
        "resourceType": "DiagnosticReport",
        "id": r.workitem_uid,
        "identifier": [uid_identifier(r.workitem_uid)],
    }
    if orders:
        resource["basedOn"] = [{"reference": ref} for ref in orders]
    resource["status"] = result_status(r)
    resource["category"] = [codeable(V2_0074, "RAD", "Radiology")]
    resource["code"] = product_concept(r.product)
    if patient is not None:
        resource["subject"] = patient_reference(patient)
    if r.completed_at is not None:
        resource["effectiveDateTime"] = fhir_datetime(r.completed_at)
    issued = _issued(r)
    if issued is not None:
        resource["issued"] = fhir_datetime(issued)
    if _reviewed(r):
        resource["resultsInterpreter"] = [{"display": r.reviewer}]
    resource["imagingStudy"] = [study_reference(r.study_instance_uid)]
    ids = observation_ids(r)
    if ids:
        resource["result"] = [{"reference": f"Observation/{oid}"} for oid in ids]
    conclusion = _conclusion(r)
    if conclusion:
        resource["conclusion"] = conclusion
    base = wado_rs_base.rstrip("/")
    forms = [
        {
            "contentType": "image/jpeg",
            "url": (
                f"{base}/studies/{r.study_instance_uid}/series/{o.series_instance_uid}"
                f"/instances/{o.sop_instance_uid}/rendered"
            ),
            "title": "AI result summary page",
        }
        for o in r.objects
        if o.kind == "SC"
    ]
    if forms and base:
        resource["presentedForm"] = forms
    return resource


_PRESENT = ("52101004", "SCT", "Present")
_ABSENT = ("2667000", "SCT", "Absent")


def _finding_values(f: FindingView) -> dict[str, Any]:
    """Qualitative evaluation (DICOM SR IG, Imaging Qualitative Evaluation): the coded value
    Present/Absent, with the matching interpretation (v3 POS/NEG)."""
    values: dict[str, Any] = {}
    if f.present is not None:
        values["valueCodeableConcept"] = {"coding": [coding(_PRESENT if f.present else _ABSENT)]}
        values["interpretation"] = [
            codeable(OBSERVATION_INTERPRETATION, "POS", "Positive")
            if f.present
            else codeable(OBSERVATION_INTERPRETATION, "NEG", "Negative")
        ]
    if f.site is not None and f.site[0]:
        site = concept(f.site)
        where = [p for p in (f.site[2], f.laterality[2] if f.laterality else "") if p]
        if where:
            site["text"] = ", ".join(where)
        values["bodySite"] = site
    return values


def _measurement_values(m: MeasurementView) -> dict[str, Any]:
    """Measurement (DICOM SR IG, Imaging Measurement; TID 300): the numeric value with its
    UCUM unit (e.g. bone age LOINC 85151-9 in ``a``)."""
    quantity: dict[str, Any] = {"value": m.value}
    if m.unit:
        quantity.update(unit=m.unit, system=UCUM, code=m.unit)
    return {"valueQuantity": quantity}


def observations(r: ResultView, *, patient: PatientView | None) -> list[Resource]:
    """One Observation per finding, then one per measurement, of a result (DICOM SR to
    FHIR IG, TID 1500 → Observation), ids ``<workitem UID>-<n>`` from 1
    (:func:`observation_id`); [] when the outcome is failed/cancelled.

    Common elements: identifier (:data:`~aifi.fhir.codes.OBSERVATION_ID_SYSTEM`), status as
    the report's (:func:`result_status`), category ``imaging``, code = the finding or
    measurement concept, subject, effective = completion, issued, device = the AI product,
    derivedFrom = the ImagingStudy. Deviation from the IG (R5): no ImagingSelection in R4,
    so derivedFrom names the study rather than the images/regions; the finding site is
    ``bodySite`` (R4) rather than a BodyStructure, its laterality only in the text."""
    ids = observation_ids(r)
    if not ids:
        return []
    status = result_status(r)
    issued = _issued(r)
    specific = [_finding_values(f) for f in r.findings] + [
        _measurement_values(m) for m in r.measurements
    ]
    codes = [f.code for f in r.findings] + [m.code for m in r.measurements]
    result: list[Resource] = []
    for oid, code, values in zip(ids, codes, specific, strict=True):
        resource: Resource = {
            "resourceType": "Observation",
            "id": oid,
            "identifier": [{"system": OBSERVATION_ID_SYSTEM, "value": oid}],
            "status": status,
            "category": [codeable(OBSERVATION_CATEGORY, "imaging", "Imaging")],
            "code": concept(code) or {"text": "AI result"},
        }
        if patient is not None:
            resource["subject"] = patient_reference(patient)
        if r.completed_at is not None:
            resource["effectiveDateTime"] = fhir_datetime(r.completed_at)
        if issued is not None:
            resource["issued"] = fhir_datetime(issued)
        resource.update(values)
        resource["device"] = device_reference(r.product)
        resource["derivedFrom"] = [study_reference(r.study_instance_uid)]
        result.append(resource)
    return result


def provenance(
    r: ResultView, *, task_ids: list[str], observation_ids: list[str]
) -> Resource | None:
    """Who made the report and from what (FHIR R4 provenance.html): target = the
    DiagnosticReport and its Observations; activity CREATE; agents = the AI product's Device
    (performer) and, once reviewed, the reviewer (verifier); entities = the ImagingStudy and
    the Tasks (source). None when there is no report, or no time to record (R4 requires
    ``recorded``)."""
    if r.outcome in NO_RESULT:
        return None
    recorded = r.completed_at or r.released_at or r.reviewed_at
    if recorded is None:
        return None
    agents: list[dict[str, Any]] = [
        {
            "type": codeable(PROVENANCE_PARTICIPANT_TYPE, "performer", "Performer"),
            "who": device_reference(r.product),
        }
    ]
    if _reviewed(r):
        agents.append(
            {
                "type": codeable(PROVENANCE_PARTICIPANT_TYPE, "verifier", "Verifier"),
                "who": {"display": r.reviewer},
            }
        )
    entities = [{"role": "source", "what": study_reference(r.study_instance_uid)}]
    entities += [{"role": "source", "what": {"reference": f"Task/{tid}"}} for tid in task_ids]
    return {
        "resourceType": "Provenance",
        "id": r.workitem_uid,
        "target": [{"reference": f"DiagnosticReport/{r.workitem_uid}"}]
        + [{"reference": f"Observation/{oid}"} for oid in observation_ids],
        "recorded": fhir_datetime(recorded),
        "activity": codeable(DATA_OPERATION, "CREATE", "create"),
        "agent": agents,
        "entity": entities,
    }


def result_resources(
    r: ResultView,
    *,
    task_ids: list[str],
    patient: PatientView | None,
    wado_rs_base: str,
    orders: Sequence[str] = (),
) -> list[Resource]:
    """The report, its Observations and its Provenance; [] for a failed/cancelled outcome."""
    report = diagnostic_report(r, orders=orders, patient=patient, wado_rs_base=wado_rs_base)
    if report is None:
        return []
    found = observations(r, patient=patient)
    resources: list[Resource] = [report, *found]
    prov = provenance(r, task_ids=task_ids, observation_ids=[o["id"] for o in found])
    if prov is not None:
        resources.append(prov)
    return resources
