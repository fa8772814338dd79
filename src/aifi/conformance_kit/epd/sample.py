"""The report the kit pushes: a generated AI result — fresh UIDs and a generated patient every
run, never real data — for a product of the shipped routing rules, turned into FHIR by the
hub's own mapping (:func:`aifi.fhir.mapping.diagnostic_report`,
:func:`aifi.fhir.mapping.observations`) and into the push's transaction by the push's own
builder (:func:`aifi.fhir.epd_client.report_transaction`: FHIR R4 http.html#transaction,
conditional creates with ``ifNoneExist``, http.html#ccreate). Pure: no I/O.

The result has two qualitative findings (one present, one absent), so the transaction holds
a DiagnosticReport and two Observations that it references by ``urn:uuid``; its summary says
it is a conformance test, so nobody mistakes it for a patient's report.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydicom.uid import generate_uid

from aifi.fhir.epd_client import report_transaction
from aifi.fhir.mapping import diagnostic_report, observations
from aifi.fhir.types import Resource, StoredResource
from aifi.fhir.views import FindingView, PatientView, ProductView, ResultView
from aifi.ihe_profiles.air.codes import ANKLE, FRACTURE, LEFT, RIGHT, WRIST
from aifi.ihe_profiles.rules import load_rules

PRODUCT = "AIFI-FRACTURE"
"""The shipped product whose result the kit reports (fracture detection)."""
PATIENT_ISSUER = "AIFI-CONFORMANCE-KIT"
"""Issuer of the generated Patient IDs: the EPD sees at once that the patient is made up."""
SUMMARY = "aifi conformance kit: generated test report (no patient), fracture of bone present"


@dataclass(frozen=True, slots=True)
class SampleReport:
    """A generated report as the hub holds it (``report`` and its ``observations``)."""

    report: Resource
    observations: list[Resource]
    patient: PatientView
    made: datetime

    def bundle(self) -> Resource:
        """The push's transaction Bundle (the same builder as the hub's and the gateway's)."""
        return report_transaction(self.report, self.observations)

    def focus(self) -> StoredResource:
        """The report as a stored resource, the focus of a notification's event."""
        return StoredResource(
            resource_type="DiagnosticReport",
            resource_id=str(self.report["id"]),
            version_id=1,
            last_updated=self.made,
            content=self.report,
        )


def _product() -> ProductView:
    product = load_rules().product(PRODUCT)
    return ProductView(
        code=product.code,
        name=product.name,
        vendor=product.vendor,
        version=product.version,
        supervised=product.supervision == "supervised",
        model_name=product.model_name,
    )


def sample_report(now: datetime) -> SampleReport:
    """A fresh generated report (module docstring), made at ``now``."""
    patient = PatientView(patient_id=f"KIT-{uuid.uuid4().hex[:12].upper()}", issuer=PATIENT_ISSUER)
    result = ResultView(
        workitem_uid=generate_uid(),
        study_instance_uid=generate_uid(),
        product=_product(),
        outcome="positive",
        review_state="not-required",
        summary=SUMMARY,
        completed_at=now,
        released_at=now,
        findings=(
            FindingView(code=FRACTURE, present=True, site=WRIST, laterality=LEFT),
            FindingView(code=FRACTURE, present=False, site=ANKLE, laterality=RIGHT),
        ),
    )
    report = diagnostic_report(result, patient=patient, wado_rs_base="")
    assert report is not None  # a positive result always has a report
    return SampleReport(report, observations(result, patient=patient), patient, now)


def without_status(bundle: Resource) -> Resource:
    """A copy of the push's ``bundle`` whose DiagnosticReport has no ``status`` (1..1 in
    FHIR R4 diagnosticreport.html): a transaction the EPD must refuse."""
    broken = copy.deepcopy(bundle)
    for entry in broken["entry"]:
        if entry["resource"]["resourceType"] == "DiagnosticReport":
            entry["resource"].pop("status", None)
    return broken


def created_types(bundle: Resource) -> list[str]:
    """The resource types the transaction creates, in order of first appearance."""
    kinds: list[str] = []
    for entry in bundle.get("entry") or []:
        kind = str(entry["request"]["url"])
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def _logical_references(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from _logical_references(item)
    elif isinstance(node, dict):
        if "reference" not in node and "identifier" in node and isinstance(node.get("type"), str):
            yield node
        for value in node.values():
            yield from _logical_references(value)


def referenced_types(bundle: Resource) -> list[str]:
    """The types the transaction names by logical reference only (``type`` + ``identifier``,
    references.html#logical): the EPD need not hold them."""
    kinds: list[str] = []
    for entry in bundle.get("entry") or []:
        for ref in _logical_references(entry.get("resource")):
            if ref["type"] not in kinds:
                kinds.append(str(ref["type"]))
    return kinds


__all__ = [
    "PATIENT_ISSUER",
    "PRODUCT",
    "SampleReport",
    "created_types",
    "referenced_types",
    "sample_report",
    "without_status",
]
