"""An urgent AI finding as a FHIR R4 Communication (communication.html): the message that
tells the hospital, so that people are told rather than having to poll a list.

One Communication per urgent result (a positive result of a product with
``urgent_findings``), its id the workitem UID like the DiagnosticReport it is about:

- ``status`` ``completed`` (the hub has sent it: it is in the store and on its way to the
  subscribers and the webhook), ``priority`` ``urgent`` (request-priority);
- ``category`` ``alert`` (http://terminology.hl7.org/CodeSystem/communication-category);
- ``subject`` the Patient (identifier reference, pseudonymous at a central hub);
- ``about`` the DiagnosticReport and the ImagingStudy;
- ``recipient`` the hospital: an Organization by logical reference (references.html#logical,
  identifier :data:`~aifi.fhir.codes.TENANT_SYSTEM` | tenant id) — the hub keeps no
  Organization resources;
- ``sender`` the AI product's Device; ``sent`` when the result completed;
- ``topic`` the product (what it is about, in words), ``reasonCode`` the present findings;
- ``payload.contentString`` the finding in words ("Incidental pulmonary embolism:
  Pulmonary embolism: present").

Pure: no I/O; the hub's projection (``aifi.hub.fhir.projection``) stores it.
"""

from __future__ import annotations

from aifi.fhir.codes import COMMUNICATION_CATEGORY, TENANT_SYSTEM, concept, uid_identifier
from aifi.fhir.mapping.elements import (
    codeable,
    device_reference,
    fhir_datetime,
    product_concept,
    study_reference,
)
from aifi.fhir.mapping.imaging import patient_reference
from aifi.fhir.types import Resource
from aifi.fhir.views import PatientView, ResultView


def tenant_reference(tenant: str) -> dict[str, object]:
    """The hospital as a logical Organization reference (references.html#logical)."""
    return {
        "type": "Organization",
        "identifier": {"system": TENANT_SYSTEM, "value": tenant},
        "display": tenant,
    }


def urgent_text(r: ResultView) -> str:
    """What the Communication says, in words: the product and the finding."""
    said = r.summary or "positive finding"
    return f"{r.product.name}: {said}"


def urgent_communication(
    r: ResultView, *, tenant: str, patient: PatientView | None
) -> Resource | None:
    """The Communication of an urgent result (module docstring), or None when the result is
    not urgent (not positive, or the product does not flag its findings urgent)."""
    if not r.urgent or r.outcome != "positive":
        return None
    resource: Resource = {
        "resourceType": "Communication",
        "id": r.workitem_uid,
        "identifier": [uid_identifier(r.workitem_uid)],
        "status": "completed",
        "category": [codeable(COMMUNICATION_CATEGORY, "alert", "Alert")],
        "priority": "urgent",
    }
    if patient is not None:
        resource["subject"] = patient_reference(patient)
    resource["topic"] = product_concept(r.product)
    resource["about"] = [
        {"reference": f"DiagnosticReport/{r.workitem_uid}"},
        study_reference(r.study_instance_uid),
    ]
    if r.completed_at is not None:
        resource["sent"] = fhir_datetime(r.completed_at)
    resource["recipient"] = [tenant_reference(tenant)]
    resource["sender"] = device_reference(r.product)
    reasons = [concept(f.code) for f in r.findings if f.present]
    reasons = [c for c in reasons if c]
    if reasons:
        resource["reasonCode"] = reasons
    resource["payload"] = [{"contentString": urgent_text(r)}]
    return resource


__all__ = ["tenant_reference", "urgent_communication", "urgent_text"]
