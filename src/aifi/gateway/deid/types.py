"""The public types of pseudonymisation (PS3.15 Annex E) and re-identification (E.1.2).

Shared by the engine (:mod:`aifi.gateway.deid`), the gateway's pseudonym map
(:mod:`aifi.gateway.forward.pseudonym_map`, SQL) and the parts that use them (forwarding,
results).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from aifi.dicom_json import DicomJson
from aifi.errors import AifiError

if TYPE_CHECKING:
    from pydicom import Dataset


class Option(enum.Enum):
    """De-identification methods, as the codes of CID 7050 (PS3.16) that go into the
    De-identification Method Code Sequence (0012,0064); the options of PS3.15 Table E.1-1."""

    BASIC = "113100"
    CLEAN_PIXEL_DATA = "113101"
    CLEAN_RECOGNIZABLE_VISUAL_FEATURES = "113102"
    CLEAN_GRAPHICS = "113103"
    CLEAN_STRUCTURED_CONTENT = "113104"
    CLEAN_DESCRIPTORS = "113105"
    RETAIN_LONGITUDINAL_FULL_DATES = "113106"
    RETAIN_LONGITUDINAL_MODIFIED_DATES = "113107"
    RETAIN_PATIENT_CHARACTERISTICS = "113108"
    RETAIN_DEVICE_IDENTITY = "113109"
    RETAIN_UIDS = "113110"
    RETAIN_SAFE_PRIVATE = "113111"
    RETAIN_INSTITUTION_IDENTITY = "113112"


@dataclass(frozen=True, slots=True)
class PatientIdentity:
    """A patient pseudonym and the identity behind it (a row of ``gw_patient``)."""

    pseudo_id: str
    original_id: str
    issuer: str
    date_offset_days: int
    identity: DicomJson = field(default_factory=dict)
    """The original Patient module attributes (Patient's Name, ID, Birth Date, Sex, Other
    Patient IDs ...) as DICOM JSON, restored on re-identification."""


@dataclass(frozen=True, slots=True)
class StudyIdentity:
    """A pseudonymous study and the original study's identification (``gw_study_map``)."""

    pseudo_study_uid: str
    original_study_uid: str
    patient_pseudo_id: str
    accession_pseudo: str
    identity: DicomJson = field(default_factory=dict)
    """The original General Study / Patient Study module attributes (Study Date and Time,
    Accession Number, Study ID, Referring Physician, Study Description ...) as DICOM JSON."""


@dataclass(frozen=True, slots=True)
class Pseudonymised:
    """One pseudonymised instance and the mapping facts it produced (all deterministic:
    the same original, key and profile give the same bytes and the same facts)."""

    dataset: Dataset
    """The pseudonymised data set, file meta rebuilt (Media Storage SOP Instance UID, etc.)."""
    uids: dict[str, str]
    """pseudonym -> original, for every UID that was replaced (at any depth)."""
    patient: PatientIdentity
    study: StudyIdentity


class Quarantine(AifiError):
    """This instance must not leave the hospital (e.g. Burned In Annotation YES, or absent
    for a SOP class that typically burns text in); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotReidentifiable(AifiError):
    """A result that cannot be fully re-identified (a pseudonym would remain, or the study
    or patient is unknown to this gateway); it is not delivered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PseudonymLookup(Protocol):
    """What re-identification needs of the pseudonym map."""

    def original_uid(self, pseudo: str) -> str | None: ...

    def patient(self, pseudo_id: str) -> PatientIdentity | None: ...

    def study(self, pseudo_study_uid: str) -> StudyIdentity | None: ...
