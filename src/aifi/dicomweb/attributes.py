"""Which attributes belong to which query level, and the values the index keeps.

Level membership follows the QIDO-RS required keys (PS3.18 §10.6.1.3, Tables 10.6.1-5/6/7)
extended with the Patient, General Study, Patient Study, General Series and General
Equipment modules (PS3.3 C.7), so that ``includefield=all`` at study or series level returns
the attributes a viewer or an AI product expects to see at that level.

The fuzzy form of a person name (:func:`fuzzy_pn`) is stored next to the name so that
``fuzzymatching=true`` (PS3.18 §8.3.4.1) is an indexed, case- and accent-insensitive match.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset
from pydicom.datadict import tag_for_keyword

PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "PatientComments",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "EthnicGroup",
)
STUDY_KEYWORDS = (
    "SpecificCharacterSet",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName",
    "StudyInstanceUID",
    "StudyID",
    "StudyDescription",
    "ProcedureCodeSequence",
    "NameOfPhysiciansReadingStudy",
    "AdmittingDiagnosesDescription",
    "ReferencedStudySequence",
    "TimezoneOffsetFromUTC",
    "InstitutionName",
)
SERIES_KEYWORDS = (
    "Modality",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "SeriesDate",
    "SeriesTime",
    "Laterality",
    "BodyPartExamined",
    "ProtocolName",
    "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime",
    "PerformedProcedureStepID",
    "PerformedProcedureStepDescription",
    "RequestAttributesSequence",
    "OperatorsName",
    "PerformingPhysicianName",
    "FrameOfReferenceUID",
    "Manufacturer",
    "ManufacturerModelName",
    "StationName",
    "InstitutionalDepartmentName",
)
INSTANCE_KEYWORDS = (
    "SOPClassUID",
    "SOPInstanceUID",
    "InstanceNumber",
    "Rows",
    "Columns",
    "BitsAllocated",
    "NumberOfFrames",
    "AcquisitionDateTime",
    "ContentDate",
    "ContentTime",
    "ImageType",
)


def tag_hex(keyword: str) -> str:
    """``"PatientName"`` → ``"00100010"`` (the DICOM JSON key)."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


STUDY_LEVEL_TAGS = frozenset(tag_hex(k) for k in PATIENT_KEYWORDS + STUDY_KEYWORDS)
SERIES_LEVEL_TAGS = frozenset(tag_hex(k) for k in SERIES_KEYWORDS)


def fuzzy_pn(value: str) -> str:
    """Case- and accent-insensitive form of a person name or query value.

    Decomposes (NFKD), drops combining marks, folds case, and turns the component
    separator ``^`` and groups ``=`` into spaces: ``"Müller^Ärne"`` → ``"muller arne"``.
    Wildcards ``*`` and ``?`` pass through unchanged.
    """
    decomposed = unicodedata.normalize("NFKD", value)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().replace("^", " ").replace("=", " ").split())


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _date(ds: Dataset, keyword: str) -> str | None:
    """A DA value for the index: ``YYYYMMDD``. The ACR-NEMA form ``YYYY.MM.DD`` (PS3.5
    §6.2, Table 6.2-1 note) is normalised; anything else that is not 8 digits is not
    indexed (it stays in the stored file and metadata)."""
    value = _text(ds, keyword)
    if value is None:
        return None
    value = value.strip()
    if len(value) == 10 and value[4] == value[7] == ".":
        value = value.replace(".", "")
    return value if len(value) == 8 and value.isdigit() else None


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class StudyRecord:
    StudyInstanceUID: str
    StudyDate: str | None
    StudyTime: str | None
    AccessionNumber: str | None
    PatientName: str | None
    PatientID: str | None
    StudyID: str | None
    ReferringPhysicianName: str | None
    StudyDescription: str | None

    @property
    def patient_name_fuzzy(self) -> str | None:
        return fuzzy_pn(self.PatientName) if self.PatientName else None

    @property
    def referring_physician_name_fuzzy(self) -> str | None:
        return fuzzy_pn(self.ReferringPhysicianName) if self.ReferringPhysicianName else None


@dataclass(frozen=True, slots=True)
class SeriesRecord:
    SeriesInstanceUID: str
    Modality: str | None
    SeriesNumber: int | None
    PerformedProcedureStepStartDate: str | None
    PerformedProcedureStepStartTime: str | None


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    SOPInstanceUID: str
    SOPClassUID: str
    InstanceNumber: int | None
    NumberOfFrames: int | None
    Rows: int | None
    Columns: int | None


def _pn(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or str(value) == "":
        return None
    return str(value)


def study_record(ds: Dataset) -> StudyRecord:
    return StudyRecord(
        StudyInstanceUID=str(ds.StudyInstanceUID),
        StudyDate=_date(ds, "StudyDate"),
        StudyTime=_text(ds, "StudyTime"),
        AccessionNumber=_text(ds, "AccessionNumber"),
        PatientName=_pn(ds, "PatientName"),
        PatientID=_text(ds, "PatientID"),
        StudyID=_text(ds, "StudyID"),
        ReferringPhysicianName=_pn(ds, "ReferringPhysicianName"),
        StudyDescription=_text(ds, "StudyDescription"),
    )


def series_record(ds: Dataset) -> SeriesRecord:
    return SeriesRecord(
        SeriesInstanceUID=str(ds.SeriesInstanceUID),
        Modality=_text(ds, "Modality"),
        SeriesNumber=_int(ds, "SeriesNumber"),
        PerformedProcedureStepStartDate=_date(ds, "PerformedProcedureStepStartDate"),
        PerformedProcedureStepStartTime=_text(ds, "PerformedProcedureStepStartTime"),
    )


def instance_record(ds: Dataset) -> InstanceRecord:
    return InstanceRecord(
        SOPInstanceUID=str(ds.SOPInstanceUID),
        SOPClassUID=str(ds.SOPClassUID),
        InstanceNumber=_int(ds, "InstanceNumber"),
        NumberOfFrames=_int(ds, "NumberOfFrames"),
        Rows=_int(ds, "Rows"),
        Columns=_int(ds, "Columns"),
    )


def level_subset(metadata: dict[str, Any], tags: frozenset[str]) -> dict[str, Any]:
    """The part of an instance's DICOM JSON whose top-level tags are in ``tags``."""
    return {tag: value for tag, value in metadata.items() if tag in tags}
