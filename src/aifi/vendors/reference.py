"""A reference analyzer: one Basic Text SR per workitem, for tests and the demo.

It stands in for a real AI product until AI results (IHE AIR) land: it looks at nothing but
the headers of its inputs and says so. The SR is a valid Basic Text SR Storage instance
(PS3.3 A.35.1) in the inputs' study, in a new series, whose Current Requested Procedure
Evidence Sequence (0040,A375) references every input instance (PS3.3 C.17.2), with one
TEXT finding under a CONTAINER root (PS3.3 C.17.3).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    BasicTextSRStorage,
    generate_uid,
)

from aifi.dicom_json import DicomJson, first, items
from aifi.dicomweb.part10 import with_file_meta
from aifi.vendors.performer import AnalysisFailed
from aifi.vendors.workitem import (
    CODE_VALUE,
    SCHEDULED_WORKITEM_CODE_SEQUENCE,
    SOP_INSTANCE_UID,
)

__all__ = ["ReferenceAnalyzer", "reference_report"]

# Module attributes copied from the inputs (Patient, General Study; PS3.3 C.7.1.1, C.7.2.1).
PATIENT_AND_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "StudyDescription",
)
REPORT_TITLE = ("18748-4", "LN", "Diagnostic imaging report")
FINDING = ("121071", "DCM", "Finding")
SERIES_NUMBER = 9001
"""Series Number of reference results, high so viewers list them after the images."""


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    code = Dataset()
    code.CodeValue = value
    code.CodingSchemeDesignator = scheme
    code.CodeMeaning = meaning
    return code


def _evidence(inputs: list[Dataset]) -> Sequence:
    """Current Requested Procedure Evidence Sequence: study → series → instances."""
    tree: dict[str, dict[str, list[Dataset]]] = defaultdict(lambda: defaultdict(list))
    for ds in inputs:
        tree[str(ds.StudyInstanceUID)][str(ds.SeriesInstanceUID)].append(ds)
    studies = []
    for study_uid, series in tree.items():
        study = Dataset()
        study.StudyInstanceUID = study_uid
        study.ReferencedSeriesSequence = []
        for series_uid, members in series.items():
            item = Dataset()
            item.SeriesInstanceUID = series_uid
            item.ReferencedSOPSequence = []
            for ds in members:
                ref = Dataset()
                ref.ReferencedSOPClassUID = ds.SOPClassUID
                ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
                item.ReferencedSOPSequence.append(ref)
            study.ReferencedSeriesSequence.append(item)
        studies.append(study)
    return Sequence(studies)


def reference_report(inputs: list[Dataset], text: str, *, manufacturer: str) -> Dataset:
    """A Basic Text SR in the first input's study, new series, with ``text`` as its one
    finding, referencing all ``inputs`` as evidence. Part 10 ready (File Meta set)."""
    if not inputs:
        raise ValueError("A report needs at least one input instance")
    source = inputs[0]
    now = datetime.now(UTC)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for keyword in PATIENT_AND_STUDY:
        if keyword in source:
            setattr(ds, keyword, source.data_element(keyword).value)  # type: ignore[union-attr]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        ds.setdefault(keyword, "")  # Type 2 (PS3.3 C.7.1.1)
    for keyword in ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID"):
        ds.setdefault(keyword, "")
    ds.setdefault("AccessionNumber", "")
    # SR Document Series (C.17.1), General Equipment (C.7.5.1), SOP Common (C.12.1)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = "aifi-hub reference analysis"
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.Manufacturer = manufacturer
    ds.SOPClassUID = BasicTextSRStorage
    ds.SOPInstanceUID = generate_uid()
    # SR Document General (C.17.2)
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.PerformedProcedureCodeSequence = []
    ds.CurrentRequestedProcedureEvidenceSequence = _evidence(inputs)
    # SR Document Content (C.17.3): CONTAINER root with one TEXT item
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code(*REPORT_TITLE)]
    ds.ContinuityOfContent = "SEPARATE"
    finding = Dataset()
    finding.RelationshipType = "CONTAINS"
    finding.ValueType = "TEXT"
    finding.ConceptNameCodeSequence = [_code(*FINDING)]
    finding.TextValue = text
    ds.ContentSequence = [finding]
    return with_file_meta(ds)


class ReferenceAnalyzer:
    """An :class:`~aifi.vendors.performer.Analyzer` that reports what it was given:
    "Reference analysis of N instances (product X)". Refuses (AnalysisFailed) inputs from
    more than one study, which a real product would not know how to report on."""

    def __init__(self, *, manufacturer: str = "aifi-hub reference analyzer") -> None:
        self.manufacturer = manufacturer

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        studies = {str(ds.StudyInstanceUID) for ds in inputs}
        if len(studies) != 1:
            raise AnalysisFailed(f"Inputs must come from one study, not {len(studies)}")
        codes = items(workitem, SCHEDULED_WORKITEM_CODE_SEQUENCE)
        product = str(first(codes[0], CODE_VALUE)) if codes else "unknown"
        uid = first(workitem, SOP_INSTANCE_UID)
        text = (
            f"Reference analysis of {len(inputs)} instance{'s' if len(inputs) != 1 else ''} "
            f"(product {product}{f', workitem {uid}' if uid else ''}). "
            "No AI was run; this report only shows that the workflow works."
        )
        return [reference_report(inputs, text, manufacturer=self.manufacturer)]
