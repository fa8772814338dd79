"""The Task of a UPS workitem or of an EPD's request (IHE AIW-I; FHIR R4 task.html): its
status from the UPS state and the result's review and delivery (:func:`task_status`).
"""

from __future__ import annotations

import copy
from typing import Any

from aifi.fhir.codes import (
    BUSINESS_STATUS,
    BUSINESS_STATUS_SYSTEM,
    accession_identifier,
    uid_identifier,
)
from aifi.fhir.mapping.elements import NO_RESULT, device_reference, fhir_datetime, product_concept
from aifi.fhir.mapping.imaging import patient_reference
from aifi.fhir.types import Resource
from aifi.fhir.views import ResultView, TaskView

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
        resource["owner"] = device_reference(t.product)
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
    resource["code"] = product_concept(t.product)
    resource["description"] = t.product.name
    _set(resource, "focus", focus)
    if t.patient is not None:
        resource["for"] = patient_reference(t.patient)
    if t.authored_on is not None:
        resource["authoredOn"] = fhir_datetime(t.authored_on)
    if t.last_modified is not None:
        resource["lastModified"] = fhir_datetime(t.last_modified)
    resource["owner"] = device_reference(t.product)
    if focus is not None:
        resource["input"] = [{"type": {"text": "ImagingStudy"}, "valueReference": focus}]
    _set(resource, "output", _task_output(t))
    return resource
