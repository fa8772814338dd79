"""The hub's state as FHIR R4 resources: pure functions from the views of
:mod:`aifi.fhir.views` to resource JSON (no I/O; every result passes
:func:`aifi.fhir.resources.validated`).

Resource ids and identifiers follow the shared conventions of :mod:`aifi.fhir.codes`:
Task = workitem UID (or the EPD's Task id), DiagnosticReport and Provenance = workitem UID,
Observation = ``<workitem UID>-<n>`` (hashed when that exceeds 64 characters),
ImagingStudy = Study Instance UID, Device = product code, Patient = ``pat-`` + a hash of
issuer and Patient ID.

Standards followed:

- IHE AI Workflow for Imaging (AIW-I): a UPS workitem (PS3.4 Annex CC) requested by the
  hub's Task Manager is mirrored as a FHIR Task; the UPS state and the result's review state
  become ``Task.status`` (FHIR R4 task.html#statemachine) and ``Task.businessStatus``.
- HL7 "DICOM SR to FHIR Resource Mapping" IG (http://hl7.org/fhir/uv/dicom-sr, STU1,
  written for FHIR R5): TID 1500 qualitative evaluations and measurements become
  Observations (profiles *Imaging Qualitative Evaluation* and *Imaging Measurement*): code =
  the concept name, value = the coded value or the numeric value with its UCUM unit,
  ``device`` = the algorithm (TID 4019 Algorithm Identification → Device), status
  preliminary/final from the report's verification. Where R4 lacks the R5 element the IG
  uses, the R4 equivalent is used and said so in the function's docstring (R4 has no
  ImagingSelection or ``bodyStructure``: ``derivedFrom`` names the ImagingStudy, the
  finding site is ``bodySite`` with the laterality in its text). The IG's Measurement Group
  Observation (one per TID 1501 group, with ``hasMember``) is not produced: each of our
  groups holds one finding or one measurement, so the group adds nothing.
- FHIR R4 diagnosticreport.html (imaging report: category RAD, ``imagingStudy``,
  ``presentedForm``), imagingstudy.html (identifiers, ``urn:ietf:rfc:3986`` SOP classes,
  the WADO-RS Endpoint), provenance.html, device.html.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aifi.fhir.codes import (
    BUSINESS_STATUS,
    BUSINESS_STATUS_SYSTEM,
    DATA_OPERATION,
    DCM,
    ENDPOINT_CONNECTION_TYPE,
    OBSERVATION_CATEGORY,
    OBSERVATION_ID_SYSTEM,
    OBSERVATION_INTERPRETATION,
    PRODUCT_SYSTEM,
    PROVENANCE_PARTICIPANT_TYPE,
    RFC3986,
    UCUM,
    V2_0074,
    accession_identifier,
    coding,
    concept,
    patient_id_system,
    uid_identifier,
)
from aifi.fhir.types import Resource
from aifi.fhir.views import (
    FindingView,
    MeasurementView,
    PatientView,
    ProductView,
    ResultView,
    SeriesView,
    StudyView,
    TaskView,
)

NO_RESULT = ("failed", "cancelled")
"""Outcomes without a report: the workitem produced nothing to report."""

WADO_ENDPOINT_ID = "wado"
"""Id of the ImagingStudy's contained WADO-RS Endpoint (referenced as ``#wado``)."""


# -- small pieces -------------------------------------------------------------------------


def fhir_datetime(value: datetime) -> str:
    """A FHIR ``dateTime``/``instant`` (datatypes.html: a time needs a zone): naive values are
    UTC; UTC is written ``Z``. The form is the one the R4B models write back (seconds, or 6
    fraction digits), so a round trip leaves the resource unchanged."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _product_concept(product: ProductView) -> dict[str, Any]:
    return {
        "coding": [{"system": PRODUCT_SYSTEM, "code": product.code, "display": product.name}],
        "text": product.name,
    }


def _device_reference(product: ProductView) -> dict[str, Any]:
    return {"reference": f"Device/{product.code}"}


def _study_reference(uid: str) -> dict[str, Any]:
    return {"reference": f"ImagingStudy/{uid}"}


def _codeable(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}]}


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


# -- Task ---------------------------------------------------------------------------------


def _business_status(code: str) -> dict[str, Any]:
    display = BUSINESS_STATUS[code]
    return {
        "coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": code, "display": display}],
        "text": display,
    }


def _result_business_status(result: ResultView) -> str | None:
    """Where a completed workitem's result stands: review first, then delivery."""
    if result.outcome in NO_RESULT:
        return None
    if result.review_state == "awaiting-review":
        return "awaiting-review"
    if result.review_state == "rejected":
        return "rejected"
    if result.delivered:
        return "delivered"
    if result.review_state == "accepted":
        return "accepted"
    return "released"


def task_status(t: TaskView) -> tuple[str, str | None]:
    """``(Task.status, businessStatus code)`` of a workitem or an EPD's request.

    FHIR R4 task.html#statemachine against the UPS states (PS3.4 CC.1.1, IHE AIW-I):

    ============================  ===========================================
    UPS / request                 Task.status (businessStatus)
    ============================  ===========================================
    request waiting for study     requested (waiting-for-study)
    request failed                failed
    request withdrawn             cancelled
    SCHEDULED, input READY        ready
    SCHEDULED, input not ready    requested
    IN PROGRESS                   in-progress
    COMPLETED                     completed (awaiting-review, rejected,
                                  delivered, accepted or released)
    COMPLETED, no result objects  failed (IHE AIW-I: not a negative)
    CANCELED by the requester     cancelled
    CANCELED otherwise            failed (the performer discontinued, a
                                  deadline passed, attempts ran out)
    ============================  ===========================================

    A requester's cancellation can end an IN PROGRESS workitem; the Task then goes
    in-progress → cancelled, a transition R4's diagram draws only before work starts — the
    UPS says the work was stopped on request, which is what ``cancelled`` means here.
    """
    if t.state is None:
        if t.request_failed:
            return "failed", None
        if t.cancelled_by_requester:
            return "cancelled", None
        return "requested", "waiting-for-study" if t.waiting_for_study else None
    if t.state == "SCHEDULED":
        if t.input_readiness == "READY":
            return "ready", None
        return "requested", "waiting-for-study" if t.waiting_for_study else None
    if t.state == "IN PROGRESS":
        return "in-progress", None
    if t.state == "COMPLETED":
        if t.result is not None and t.result.outcome == "failed":
            return "failed", None
        return "completed", _result_business_status(t.result) if t.result else None
    return ("cancelled" if t.cancelled_by_requester else "failed"), None


def _task_focus(t: TaskView) -> dict[str, Any] | None:
    if t.study_instance_uid:
        return {
            "reference": f"ImagingStudy/{t.study_instance_uid}",
            "identifier": uid_identifier(t.study_instance_uid),
        }
    if t.accession_number:
        return {
            "identifier": accession_identifier(t.accession_number),
            "display": f"Study with accession number {t.accession_number}",
        }
    return None


def _task_output(t: TaskView) -> list[dict[str, Any]]:
    output: list[dict[str, Any]] = []
    if t.result is not None and t.result.outcome not in NO_RESULT:
        output.append(
            {
                "type": {"text": "DiagnosticReport"},
                "valueReference": {"reference": f"DiagnosticReport/{t.result.workitem_uid}"},
            }
        )
    output.extend(
        {"type": {"text": "DICOM instance"}, "valueIdentifier": uid_identifier(uid)}
        for uid in t.output_instance_uids
    )
    return output


def _set(resource: Resource, key: str, value: Any) -> None:
    """Set ``key``, or remove it when there is no value (R4 allows no empty elements)."""
    if value is None or value == [] or value == {}:
        resource.pop(key, None)
    else:
        resource[key] = value


def task(t: TaskView) -> Resource:
    """The Task of a UPS workitem or of an EPD's request (IHE AIW-I; FHIR R4 task.html).

    ``intent`` order; ``status``/``businessStatus`` per :func:`task_status`, ``statusReason``
    the reason the workitem or request failed or was cancelled; ``priority`` urgent for a
    HIGH Scheduled Procedure Step Priority; ``code`` the product; ``focus`` and ``input``
    the study (by reference once its UID is known, by accession number before); ``for`` the
    patient; ``owner`` the product's Device; ``output`` the DiagnosticReport and the result
    instances (by UID).

    With ``t.request`` (the Task an EPD created) the EPD's Task is kept — its identifier,
    basedOn, requester, note, code, priority, input … — and only what the hub keeps in step
    is replaced: status, statusReason, businessStatus, focus (theirs stays until the study
    UID is known), for (theirs stays while the hub has no patient), owner, output,
    lastModified; the workitem UID is added to its identifiers.
    """
    status, business = task_status(t)
    focus = _task_focus(t)
    reason = {"text": t.reason} if t.reason else None
    workitem_id = uid_identifier(t.workitem_uid) if t.workitem_uid else None
    if t.request is not None:
        resource: Resource = copy.deepcopy(t.request)
        resource["resourceType"] = "Task"
        resource["id"] = t.task_id
        identifiers = list(resource.get("identifier") or [])
        if workitem_id is not None and workitem_id not in identifiers:
            identifiers.append(workitem_id)
        _set(resource, "identifier", identifiers)
        resource["status"] = status
        _set(resource, "statusReason", reason)
        _set(resource, "businessStatus", _business_status(business) if business else None)
        if t.study_instance_uid or "focus" not in resource:
            _set(resource, "focus", focus)
        if t.patient is not None:
            resource["for"] = patient_reference(t.patient)
        resource["owner"] = _device_reference(t.product)
        _set(resource, "output", _task_output(t))
        if t.last_modified is not None:
            resource["lastModified"] = fhir_datetime(t.last_modified)
        return resource

    resource = {"resourceType": "Task", "id": t.task_id}
    if workitem_id is not None:
        resource["identifier"] = [workitem_id]
    resource["status"] = status
    _set(resource, "statusReason", reason)
    _set(resource, "businessStatus", _business_status(business) if business else None)
    resource["intent"] = "order"
    resource["priority"] = "urgent" if t.priority == "HIGH" else "routine"
    resource["code"] = _product_concept(t.product)
    resource["description"] = t.product.name
    _set(resource, "focus", focus)
    if t.patient is not None:
        resource["for"] = patient_reference(t.patient)
    if t.authored_on is not None:
        resource["authoredOn"] = fhir_datetime(t.authored_on)
    if t.last_modified is not None:
        resource["lastModified"] = fhir_datetime(t.last_modified)
    resource["owner"] = _device_reference(t.product)
    if focus is not None:
        resource["input"] = [{"type": {"text": "ImagingStudy"}, "valueReference": focus}]
    _set(resource, "output", _task_output(t))
    return resource


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
    resource["category"] = [_codeable(V2_0074, "RAD", "Radiology")]
    resource["code"] = _product_concept(r.product)
    if patient is not None:
        resource["subject"] = patient_reference(patient)
    if r.completed_at is not None:
        resource["effectiveDateTime"] = fhir_datetime(r.completed_at)
    issued = _issued(r)
    if issued is not None:
        resource["issued"] = fhir_datetime(issued)
    if _reviewed(r):
        resource["resultsInterpreter"] = [{"display": r.reviewer}]
    resource["imagingStudy"] = [_study_reference(r.study_instance_uid)]
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
            _codeable(OBSERVATION_INTERPRETATION, "POS", "Positive")
            if f.present
            else _codeable(OBSERVATION_INTERPRETATION, "NEG", "Negative")
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
            "category": [_codeable(OBSERVATION_CATEGORY, "imaging", "Imaging")],
            "code": concept(code) or {"text": "AI result"},
        }
        if patient is not None:
            resource["subject"] = patient_reference(patient)
        if r.completed_at is not None:
            resource["effectiveDateTime"] = fhir_datetime(r.completed_at)
        if issued is not None:
            resource["issued"] = fhir_datetime(issued)
        resource.update(values)
        resource["device"] = _device_reference(r.product)
        resource["derivedFrom"] = [_study_reference(r.study_instance_uid)]
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
            "type": _codeable(PROVENANCE_PARTICIPANT_TYPE, "performer", "Performer"),
            "who": _device_reference(r.product),
        }
    ]
    if _reviewed(r):
        agents.append(
            {
                "type": _codeable(PROVENANCE_PARTICIPANT_TYPE, "verifier", "Verifier"),
                "who": {"display": r.reviewer},
            }
        )
    entities = [{"role": "source", "what": _study_reference(r.study_instance_uid)}]
    entities += [{"role": "source", "what": {"reference": f"Task/{tid}"}} for tid in task_ids]
    return {
        "resourceType": "Provenance",
        "id": r.workitem_uid,
        "target": [{"reference": f"DiagnosticReport/{r.workitem_uid}"}]
        + [{"reference": f"Observation/{oid}"} for oid in observation_ids],
        "recorded": fhir_datetime(recorded),
        "activity": _codeable(DATA_OPERATION, "CREATE", "create"),
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
