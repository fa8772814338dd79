"""The hub's state as FHIR R4 resources: pure functions from the views of
:mod:`aifi.fhir.views` to resource JSON (no I/O; every result passes
:func:`aifi.fhir.resources.validated`), one module per group of resources:
:mod:`~aifi.fhir.mapping.imaging` (Patient, Device, ImagingStudy),
:mod:`~aifi.fhir.mapping.tasks` (Task), :mod:`~aifi.fhir.mapping.reports` (DiagnosticReport,
Observations, Provenance), :mod:`~aifi.fhir.mapping.communications` (the Communication of an
urgent finding), on the shared pieces of :mod:`~aifi.fhir.mapping.elements`.

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
  the WADO-RS Endpoint), provenance.html, device.html, communication.html (an urgent
  finding: category alert, priority urgent, about the report).
"""

from aifi.fhir.mapping.communications import urgent_communication
from aifi.fhir.mapping.elements import NO_RESULT, fhir_datetime
from aifi.fhir.mapping.imaging import (
    WADO_ENDPOINT_ID,
    device,
    imaging_study,
    patient,
    patient_id,
    patient_reference,
)
from aifi.fhir.mapping.reports import (
    diagnostic_report,
    observation_id,
    observation_ids,
    observations,
    provenance,
    result_resources,
    result_status,
)
from aifi.fhir.mapping.tasks import task, task_status

__all__ = [
    "NO_RESULT",
    "WADO_ENDPOINT_ID",
    "device",
    "diagnostic_report",
    "fhir_datetime",
    "imaging_study",
    "observation_id",
    "observation_ids",
    "observations",
    "patient",
    "patient_id",
    "patient_reference",
    "provenance",
    "result_resources",
    "result_status",
    "task",
    "task_status",
    "urgent_communication",
]
