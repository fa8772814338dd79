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

from pydicom.datadict import tag_for_keyword

from aifi.dicom_json import values

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


def _normal_date(value: str | None) -> str | None:
    """A DA value for the index: ``YYYYMMDD``. The ACR-NEMA form ``YYYY.MM.DD`` (PS3.5
    §6.2, Table 6.2-1 note) is normalised; anything else that is not 8 digits is not
    indexed (it stays in the stored file and metadata)."""
    if value is None:
        return None
    value = value.strip()
    if len(value) == 10 and value[4] == value[7] == ".":
        value = value.replace(".", "")
    return value if len(value) == 8 and value.isdigit() else None


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
    BitsAllocated: int | None


# -- the records, from an instance's DICOM JSON --------------------------------------------
#
# The index values are read from the DICOM JSON the STOW-RS checks made anyway: a dictionary
# look-up per value, where a pydicom attribute access with its value conversion cost about
# 0.4 ms of CPU per instance. ``tests/unit/test_index_records.py`` checks that they are the
# values pydicom gives for the same data set, over pydicom's bundled files.

_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _json_str(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):  # PN (PS3.18 F.2.2): groups joined as pydicom shows them
        groups = [str(value.get(g) or "") for g in _PN_GROUPS]
        while groups and not groups[-1]:
            groups.pop()
        return "=".join(groups)
    return str(value)


def json_text(metadata: dict[str, Any], keyword: str) -> str | None:
    """The value of ``keyword`` (one of the indexed attributes) as the index keeps text:
    values joined with backslashes, person names with their groups; None when empty."""
    found = values(metadata, _TAG_HEX[keyword])
    if not found:
        return None
    text = "\\".join(_json_str(v) for v in found)
    return text or None


def _json_date(metadata: dict[str, Any], keyword: str) -> str | None:
    return _normal_date(json_text(metadata, keyword))


def _json_int(metadata: dict[str, Any], keyword: str) -> int | None:
    found = values(metadata, _TAG_HEX[keyword])
    if len(found) != 1:
        return None
    value = found[0]
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def study_record(metadata: dict[str, Any]) -> StudyRecord:
    return StudyRecord(
        StudyInstanceUID=json_text(metadata, "StudyInstanceUID") or "",
        StudyDate=_json_date(metadata, "StudyDate"),
        StudyTime=json_text(metadata, "StudyTime"),
        AccessionNumber=json_text(metadata, "AccessionNumber"),
        PatientName=json_text(metadata, "PatientName"),
        PatientID=json_text(metadata, "PatientID"),
        StudyID=json_text(metadata, "StudyID"),
        ReferringPhysicianName=json_text(metadata, "ReferringPhysicianName"),
        StudyDescription=json_text(metadata, "StudyDescription"),
    )


def series_record(metadata: dict[str, Any]) -> SeriesRecord:
    return SeriesRecord(
        SeriesInstanceUID=json_text(metadata, "SeriesInstanceUID") or "",
        Modality=json_text(metadata, "Modality"),
        SeriesNumber=_json_int(metadata, "SeriesNumber"),
        PerformedProcedureStepStartDate=_json_date(metadata, "PerformedProcedureStepStartDate"),
        PerformedProcedureStepStartTime=json_text(metadata, "PerformedProcedureStepStartTime"),
    )


def instance_record(metadata: dict[str, Any]) -> InstanceRecord:
    return InstanceRecord(
        SOPInstanceUID=json_text(metadata, "SOPInstanceUID") or "",
        SOPClassUID=json_text(metadata, "SOPClassUID") or "",
        InstanceNumber=_json_int(metadata, "InstanceNumber"),
        NumberOfFrames=_json_int(metadata, "NumberOfFrames"),
        Rows=_json_int(metadata, "Rows"),
        Columns=_json_int(metadata, "Columns"),
        BitsAllocated=_json_int(metadata, "BitsAllocated"),
    )


_TAG_HEX = {
    keyword: tag_hex(keyword)
    for keyword in (
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "PatientName",
        "PatientID",
        "StudyID",
        "ReferringPhysicianName",
        "StudyDescription",
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime",
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "NumberOfFrames",
        "Rows",
        "Columns",
        "BitsAllocated",
    )
}


def level_subset(metadata: dict[str, Any], tags: frozenset[str]) -> dict[str, Any]:
    """The part of an instance's DICOM JSON whose top-level tags are in ``tags``."""
    return {tag: value for tag, value in metadata.items() if tag in tags}
