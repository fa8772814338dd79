"""What the FHIR mapping (:mod:`aifi.fhir.mapping`) is given: plain, immutable views of the
hub's state, built by the hub from its database (``aifi.hub.fhir.projection``). The mapping
functions turn them into FHIR R4 resources without any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class PatientView:
    """The patient as the hub knows it (pseudonymised at a central hub): the Patient ID,
    and its issuer when the study says (Issuer of Patient ID)."""

    patient_id: str
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class ProductView:
    """An AI product of the routing rules, with what its results say about the algorithm
    (IHE AIR algorithm identification: Contributing Equipment of the result objects)."""

    code: str
    """The product code (e.g. ``AIFI-BONEAGE``); the coding system is
    :data:`aifi.fhir.codes.PRODUCT_SYSTEM`."""
    name: str
    vendor: str
    version: str
    supervised: bool
    model_name: str | None = None
    device_uid: str | None = None
    """Device UID (0018,1002) from the product's newest result, when there is one."""
    software_versions: str | None = None
    """Software Versions (0018,1020) from the product's newest result."""


@dataclass(frozen=True, slots=True)
class InstanceView:
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None = None


@dataclass(frozen=True, slots=True)
class SeriesView:
    series_instance_uid: str
    modality: str | None
    series_number: int | None = None
    description: str | None = None
    body_part: str | None = None
    instances: tuple[InstanceView, ...] = ()


@dataclass(frozen=True, slots=True)
class StudyView:
    """A stored study (index rows of the DICOM store)."""

    study_instance_uid: str
    patient: PatientView | None
    accession_number: str | None = None
    started: datetime | None = None
    """Study Date + Study Time, when known (timezone: UTC unless the study says)."""
    description: str | None = None
    series: tuple[SeriesView, ...] = ()
    wado_rs_base: str = ""
    """The DICOMweb service root (e.g. ``https://hub.example/dicomweb``)."""


@dataclass(frozen=True, slots=True)
class FindingView:
    """A qualitative finding of an AIR result (TID 1500 / the summary of
    :func:`aifi.ihe_profiles.air.summary.summarise`). Codes are DICOM coded entries
    ``(value, scheme designator, meaning)``: the mapping turns the scheme into a FHIR system
    (SCT → http://snomed.info/sct, LN → http://loinc.org, DCM → the DICOM ontology)."""

    code: tuple[str, str, str]
    present: bool | None
    site: tuple[str, str, str] | None = None
    laterality: tuple[str, str, str] | None = None
    sop_instance_uid: str = ""
    """The result object (SR) that reports it."""


@dataclass(frozen=True, slots=True)
class MeasurementView:
    """A numeric result (e.g. bone age): ``unit`` is the UCUM code (``a``, ``mo``, ``mm``)."""

    code: tuple[str, str, str]
    value: float
    unit: str
    sop_instance_uid: str = ""


@dataclass(frozen=True, slots=True)
class ResultObjectView:
    """One result instance (SR, SEG, GSPS, SC, KO) accepted for the workitem."""

    sop_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    kind: str
    summary: str = ""


@dataclass(frozen=True, slots=True)
class ResultView:
    """The answer of one workitem (``AiResult``): outcome, review, delivery, and what the
    result objects say."""

    workitem_uid: str
    study_instance_uid: str
    product: ProductView
    outcome: Literal["positive", "negative", "measured", "failed", "cancelled"]
    review_state: Literal["not-required", "awaiting-review", "accepted", "rejected"]
    summary: str = ""
    reason: str | None = None
    urgent: bool = False
    reviewer: str | None = None
    review_reason: str | None = None
    reviewed_at: datetime | None = None
    completed_at: datetime | None = None
    released_at: datetime | None = None
    delivered: bool = False
    """Every PACS destination confirmed the result's objects."""
    objects: tuple[ResultObjectView, ...] = ()
    findings: tuple[FindingView, ...] = ()
    measurements: tuple[MeasurementView, ...] = ()


@dataclass(frozen=True, slots=True)
class TaskView:
    """A UPS workitem as the Task that mirrors it (IHE AIW-I ↔ FHIR Task).

    ``task_id`` is the workitem's SOP Instance UID for Tasks the hub itself created, or the
    id of the Task an EPD created (``request`` holds what it sent, kept as it was except
    for the fields the hub keeps in step)."""

    task_id: str
    workitem_uid: str | None
    state: Literal["SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"] | None
    """None while an EPD's request waits for its study (no workitem yet)."""
    product: ProductView
    study_instance_uid: str | None
    patient: PatientView | None = None
    accession_number: str | None = None
    input_readiness: str = "READY"
    priority: Literal["HIGH", "MEDIUM", "LOW"] = "MEDIUM"
    """Scheduled Procedure Step Priority → Task.priority (HIGH urgent, else routine)."""
    authored_on: datetime | None = None
    last_modified: datetime | None = None
    reason: str | None = None
    """Why the workitem was cancelled / failed, or why an EPD's request failed."""
    cancelled_by_requester: bool = False
    """CANCELED on a requester's cancellation request → ``cancelled``; otherwise (the
    performer discontinued, deadlines passed, attempts exhausted) → ``failed``."""
    request_failed: bool = False
    """An EPD's request that could not be served (no study in time, study does not meet
    the product's conditions)."""
    waiting_for_study: bool = False
    progress: float | None = None
    """Procedure Step Progress (0–100) while IN PROGRESS."""
    output_instance_uids: tuple[str, ...] = ()
    result: ResultView | None = None
    request: dict[str, Any] | None = field(default=None)
