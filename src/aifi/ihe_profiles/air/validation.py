"""Is this instance an acceptable AI result? The checks the hub runs on every result a
performer stores (IHE AIW-I: a performer's results land in the inputs' study), drawn from
IHE RAD TF AIR (algorithm identification, result objects), PS3.3 (SR Document General
C.17.2, Segmentation Image C.8.20.2) and PS3.16 (TID 1500, 1501, 1410, 300, 4019).

Header only: every check reads attributes and the SR content tree, never pixel data, so a
dataset read with ``stop_before_pixels=True`` validates exactly like the full one.
``validate`` returns every :class:`Violation` found (an empty list means conformant); each
names the rule it breaks so a vendor can look it up.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.tag import BaseTag, Tag

from aifi.ihe_profiles.air.codes import (
    ALGORITHM_NAME,
    ALGORITHM_VERSION,
    IMAGING_MEASUREMENT_REPORT,
    LANGUAGE_OF_CONTENT,
    MEASUREMENT_GROUP,
    PROCEDURE_REPORTED,
    TRACKING_IDENTIFIER,
    TRACKING_UID,
)
from aifi.ihe_profiles.air.equipment import is_valid_uid, processing_equipment_item

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MULTIFRAME_SC = frozenset(f"1.2.840.10008.5.1.4.1.1.7.{n}" for n in range(1, 5))
KEY_OBJECT_SELECTION = "1.2.840.10008.5.1.4.1.1.88.59"
PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"

SR_SOP_CLASSES = frozenset({COMPREHENSIVE_3D_SR, COMPREHENSIVE_SR, ENHANCED_SR})
#: SOP classes a result may have: the AIR result objects plus GSPS and Secondary Capture,
#: which AIR leaves out but which many PACS display.
RESULT_SOP_CLASSES: frozenset[str] = frozenset(
    {
        *SR_SOP_CLASSES,
        SEGMENTATION,
        GSPS,
        SECONDARY_CAPTURE,
        *MULTIFRAME_SC,
        KEY_OBJECT_SELECTION,
        PARAMETRIC_MAP,
    }
)

# Rule names (what a Violation cites).
RULE_SOP_CLASS = "IHE AIR: result SOP class"
RULE_ALGORITHM = (
    "IHE AIR: algorithm identification (Contributing Equipment, Purpose of Reference 109102)"
)
RULE_ALGORITHM_NAME = "TID 4019 Algorithm Name (111001)"
RULE_ALGORITHM_VERSION = "TID 4019 Algorithm Version (111003)"
RULE_VERIFICATION = "PS3.3 C.17.2 VerificationFlag"
RULE_ROOT = "TID 1500 row 1 Imaging Measurement Report (126000) CONTAINER"
RULE_LANGUAGE = "TID 1500 Language of Content Item and Descendants (TID 1204)"
RULE_PROCEDURE = "TID 1500 row 4 Procedure reported (121058)"
RULE_TRACKING_ID = "TID 1501/1410 Tracking Identifier (112039)"
RULE_TRACKING_UID = "TID 1501/1410 Tracking Unique Identifier (112040)"
RULE_UCUM = "TID 300 Measurement units in UCUM"
RULE_SCOORD = "TID 1410 Image Region: referenced image in the Image Library (TID 1600) or evidence"
RULE_SEG_TYPE = "IHE AIR SEG: Segment Algorithm Type AUTOMATIC (PS3.3 C.8.20.2)"
RULE_SEG_NAME = "IHE AIR SEG: Segment Algorithm Name (PS3.3 C.8.20.2)"
RULE_STUDY = "AIW-I: result in the inputs' study"
RULE_PATIENT = "AIW-I: result for the inputs' patient"
RULE_REFERENCES = "AIW-I: result references only the inputs"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: ``rule`` names the profile section or template row."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.message} ({self.rule})"


@dataclass(frozen=True, slots=True)
class InputContext:
    """What a result must agree with: the study, patient and instances it was made from."""

    study_instance_uid: str
    patient_id: str
    patient_name: str
    sop_instance_uids: frozenset[str]

    @classmethod
    def from_datasets(cls, inputs: Sequence[Dataset]) -> InputContext:
        if not inputs:
            raise ValueError("an input context needs at least one input instance")
        first = inputs[0]
        return cls(
            study_instance_uid=str(first.StudyInstanceUID),
            patient_id=str(first.get("PatientID", "") or ""),
            patient_name=str(first.get("PatientName", "") or ""),
            sop_instance_uids=frozenset(str(ds.SOPInstanceUID) for ds in inputs),
        )


def is_ai_result(ds: Dataset) -> bool:
    """A result SOP class carrying an IHE AIR algorithm identification (purpose 109102)."""
    return (
        str(ds.get("SOPClassUID", "")) in RESULT_SOP_CLASSES
        and processing_equipment_item(ds) is not None
    )


def validate(ds: Dataset, context: InputContext | None = None) -> list[Violation]:
    """Every violation of the AIR result rules in ``ds`` (header only), checked against
    ``context`` (the inputs) when given. ``[]`` means conformant."""
    found: list[Violation] = []
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in RESULT_SOP_CLASSES:
        found.append(
            Violation(
                RULE_SOP_CLASS, f"SOP Class {sop_class or '(none)'} is not an AI result object"
            )
        )
    found += _algorithm(ds)
    if sop_class in SR_SOP_CLASSES:
        found += _sr(ds)
    if sop_class == SEGMENTATION:
        found += _seg(ds)
    if context is not None:
        found += _context(ds, context)
    return found


def _algorithm(ds: Dataset) -> list[Violation]:
    item = processing_equipment_item(ds)
    if item is None:
        where = (
            "no Contributing Equipment Sequence (0018,A001)"
            if "ContributingEquipmentSequence" not in ds
            else "no Contributing Equipment item with Purpose of Reference (109102, DCM)"
        )
        return [Violation(RULE_ALGORITHM, f"{where}: the algorithm is not identified")]
    found = [
        Violation(RULE_ALGORITHM, f"Contributing Equipment item without {name}")
        for keyword, name in (
            ("Manufacturer", "Manufacturer (0008,0070)"),
            ("ManufacturerModelName", "Manufacturer's Model Name (0008,1090)"),
            ("SoftwareVersions", "Software Versions (0018,1020)"),
            ("DeviceUID", "Device UID (0018,1002)"),
        )
        if not item.get(keyword)
    ]
    device_uid = item.get("DeviceUID")
    if device_uid and not is_valid_uid(str(device_uid)):
        found.append(Violation(RULE_ALGORITHM, f"Device UID {device_uid!r} is not a DICOM UID"))
    return found


def _concept(item: Dataset) -> tuple[str, str]:
    names = item.get("ConceptNameCodeSequence")
    if not names:
        return ("", "")
    return (str(names[0].get("CodeValue", "")), str(names[0].get("CodingSchemeDesignator", "")))


def _is(item: Dataset, code: tuple[str, str, str]) -> bool:
    return _concept(item) == (code[0], code[1])


def _walk(items: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _sr(ds: Dataset) -> list[Violation]:
    found: list[Violation] = []
    if ds.get("VerificationFlag") != "UNVERIFIED":
        found.append(
            Violation(
                RULE_VERIFICATION,
                f"VerificationFlag is {ds.get('VerificationFlag')!r}; "
                "an algorithm's result is UNVERIFIED",
            )
        )
    if ds.get("ValueType") != "CONTAINER" or not _is(ds, IMAGING_MEASUREMENT_REPORT):
        found.append(
            Violation(
                RULE_ROOT,
                "the SR root is not a CONTAINER (126000, DCM, 'Imaging Measurement Report')",
            )
        )
        return found
    top = list(ds.get("ContentSequence", []))
    if not any(_is(item, LANGUAGE_OF_CONTENT) for item in top):
        found.append(Violation(RULE_LANGUAGE, "no Language of Content Item and Descendants"))
    if not any(_is(item, PROCEDURE_REPORTED) for item in top):
        found.append(Violation(RULE_PROCEDURE, "no Procedure reported (121058) content item"))

    algorithm = processing_equipment_item(ds)
    library: set[str] = set()
    scoord_refs: list[str] = []
    for item in _walk(top):
        value_type = item.get("ValueType")
        if value_type == "CONTAINER" and _is(item, MEASUREMENT_GROUP):
            found += _group(item)
        elif value_type == "NUM":
            found += _units(item)
        elif value_type == "TEXT" and algorithm is not None:
            found += _algorithm_text(item, algorithm)
        elif value_type == "IMAGE" and item.get("RelationshipType") == "CONTAINS":
            library.update(_referenced(item))
        elif value_type == "SCOORD":
            for child in item.get("ContentSequence", []):
                scoord_refs += _referenced(child)
    evidence = set(_evidence(ds))
    for uid in scoord_refs:
        if uid not in library and uid not in evidence:
            found.append(
                Violation(
                    RULE_SCOORD,
                    f"an image region references {uid}, which is neither in the "
                    "Image Library nor in the evidence",
                )
            )
    return found


def _group(group: Dataset) -> list[Violation]:
    children = list(group.get("ContentSequence", []))
    found: list[Violation] = []
    identifiers = [c for c in children if _is(c, TRACKING_IDENTIFIER)]
    uids = [c for c in children if _is(c, TRACKING_UID)]
    if not identifiers or not identifiers[0].get("TextValue"):
        found.append(Violation(RULE_TRACKING_ID, "a Measurement Group has no Tracking Identifier"))
    if not uids:
        found.append(
            Violation(RULE_TRACKING_UID, "a Measurement Group has no Tracking Unique Identifier")
        )
    elif not is_valid_uid(str(uids[0].get("UID", ""))):
        found.append(
            Violation(
                RULE_TRACKING_UID, f"Tracking Unique Identifier {uids[0].get('UID')!r} is not a UID"
            )
        )
    return found


def _units(item: Dataset) -> list[Violation]:
    name = (
        item.ConceptNameCodeSequence[0].get("CodeMeaning", "?")
        if item.get("ConceptNameCodeSequence")
        else "?"
    )
    for value in item.get("MeasuredValueSequence", []):
        for unit in value.get("MeasurementUnitsCodeSequence", []):
            if unit.get("CodingSchemeDesignator") != "UCUM":
                return [
                    Violation(
                        RULE_UCUM,
                        f"measurement {name!r} has unit {unit.get('CodeValue')!r} from "
                        f"{unit.get('CodingSchemeDesignator')!r}, not UCUM",
                    )
                ]
    return []


def _algorithm_text(item: Dataset, equipment: Dataset) -> list[Violation]:
    value = str(item.get("TextValue", ""))
    if _is(item, ALGORITHM_NAME):
        expected = str(equipment.get("ManufacturerModelName", ""))
        if value != expected:
            return [
                Violation(
                    RULE_ALGORITHM_NAME,
                    f"Algorithm Name {value!r} is not the Manufacturer's Model Name {expected!r}",
                )
            ]
    elif _is(item, ALGORITHM_VERSION):
        versions = equipment.get("SoftwareVersions", "")
        expected_versions = (
            [str(versions)] if isinstance(versions, str) else [str(v) for v in versions]
        )
        if value not in expected_versions:
            return [
                Violation(
                    RULE_ALGORITHM_VERSION,
                    f"Algorithm Version {value!r} is not the Software Versions "
                    f"{expected_versions!r}",
                )
            ]
    return []


def _referenced(item: Dataset) -> list[str]:
    return [
        str(ref.ReferencedSOPInstanceUID)
        for ref in item.get("ReferencedSOPSequence", [])
        if "ReferencedSOPInstanceUID" in ref
    ]


def _evidence(ds: Dataset) -> Iterator[str]:
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in ds.get(keyword, []):
            for series in study.get("ReferencedSeriesSequence", []):
                for ref in series.get("ReferencedSOPSequence", []):
                    if "ReferencedSOPInstanceUID" in ref:
                        yield str(ref.ReferencedSOPInstanceUID)


def _seg(ds: Dataset) -> list[Violation]:
    found: list[Violation] = []
    for segment in ds.get("SegmentSequence", []):
        number = segment.get("SegmentNumber", "?")
        if segment.get("SegmentAlgorithmType") != "AUTOMATIC":
            found.append(
                Violation(
                    RULE_SEG_TYPE,
                    f"segment {number} has Segment Algorithm Type "
                    f"{segment.get('SegmentAlgorithmType')!r}, not AUTOMATIC",
                )
            )
        if not segment.get("SegmentAlgorithmName"):
            found.append(
                Violation(RULE_SEG_NAME, f"segment {number} has no Segment Algorithm Name")
            )
    return found


REFERENCED_SOP_INSTANCE_UID = Tag(0x0008, 0x1155)


def _all_references(ds: Dataset) -> Iterator[str]:
    """Every Referenced SOP Instance UID (0008,1155) anywhere in ``ds``'s sequences.

    Only sequences are converted from their raw encoding (``get_item`` leaves the other
    elements raw): a TID 1500 report of a CT study holds thousands of elements, and
    converting each one costs far more than the walk."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        vr = getattr(raw, "VR", None) or _dictionary_vr(tag)
        if vr != "SQ":
            continue
        for item in ds[tag].value or ():
            if REFERENCED_SOP_INSTANCE_UID in item:
                yield str(item[REFERENCED_SOP_INSTANCE_UID].value)
            yield from _all_references(item)


def _dictionary_vr(tag: BaseTag) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:  # private or unknown: not a sequence we look into
        return None


def _normalised_name(name: object) -> str:
    return "=".join(part.rstrip("^ ") for part in str(name or "").split("="))


def _context(ds: Dataset, context: InputContext) -> list[Violation]:
    found: list[Violation] = []
    study = str(ds.get("StudyInstanceUID", ""))
    if study != context.study_instance_uid:
        found.append(
            Violation(
                RULE_STUDY,
                f"Study Instance UID {study!r} is not the inputs' study "
                f"{context.study_instance_uid!r}",
            )
        )
    patient_id = str(ds.get("PatientID", "") or "")
    if patient_id != context.patient_id:
        found.append(
            Violation(
                RULE_PATIENT, f"Patient ID {patient_id!r} is not the inputs' {context.patient_id!r}"
            )
        )
    name = _normalised_name(ds.get("PatientName", ""))
    if name != _normalised_name(context.patient_name):
        found.append(
            Violation(
                RULE_PATIENT, f"Patient's Name {name!r} is not the inputs' {context.patient_name!r}"
            )
        )
    foreign = sorted({uid for uid in _all_references(ds) if uid not in context.sop_instance_uids})
    if foreign:
        found.append(
            Violation(
                RULE_REFERENCES,
                f"references instances that are not among the inputs: {', '.join(foreign)}",
            )
        )
    return found
