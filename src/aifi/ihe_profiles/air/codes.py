"""Coded concepts used by the AIR result builders, validator and summary.

Every constant is a :class:`CodeTriple` — a named 3-tuple ``(value, scheme_designator,
meaning)`` — so call sites may compare it with, unpack it as, or pass instead of it a plain
``("52101004", "SCT", "Present")`` tuple; builders also accept :class:`pydicom.sr.coding.Code`
and :class:`highdicom.sr.CodedConcept` (the :data:`Code` alias).

Sources: SNOMED CT (``SCT``) and DICOM (``DCM``) codes as listed in PS3.16 (CID 7151/7464
anatomy, CID 244 laterality, CID 6335 presence, CID 7021 document titles, CID 7162
algorithm family, Annex D DCM codes); UCUM units per PS3.16 CID 7181/82.

Bone age: LOINC ``85151-9`` "XR Bone age" (scheme designator ``LN``), the observable
LOINC defines "to report the bone age (e.g. in years, months), which can be computed by
various x-ray methods" (LOINC 85151-9 record; the companion ``85150-1`` "Bone age method"
names Greulich & Pyle / Tanner–Whitehouse). No DCM or SNOMED CT observable for the age
value itself was found; LOINC is a PS3.16 Section 8 coding scheme (designator ``LN``).
"""

from __future__ import annotations

from typing import NamedTuple

from highdicom.sr import CodedConcept
from pydicom.sr.coding import Code as PydicomCode


class CodeTriple(NamedTuple):
    """A coded concept as a plain tuple: (CodeValue, CodingSchemeDesignator, CodeMeaning)."""

    value: str
    scheme_designator: str
    meaning: str


#: What a builder accepts wherever the spec says ``Code``.
Code = tuple[str, str, str] | CodeTriple | PydicomCode | CodedConcept


def coded(code: Code) -> CodedConcept:
    """``code`` as a highdicom :class:`~highdicom.sr.CodedConcept` (strict: all three parts)."""
    if isinstance(code, CodedConcept):
        return code
    if isinstance(code, PydicomCode):
        return CodedConcept(code.value, code.scheme_designator, code.meaning)
    value, scheme, meaning = code
    if not (value and scheme and meaning):
        raise ValueError(f"a code needs value, scheme designator and meaning: {code!r}")
    return CodedConcept(value, scheme, meaning)


def triple(code: Code) -> CodeTriple:
    """``code`` as a :class:`CodeTriple`."""
    if isinstance(code, CodedConcept | PydicomCode):
        return CodeTriple(str(code.value), str(code.scheme_designator), str(code.meaning))
    value, scheme, meaning = code
    return CodeTriple(value, scheme, meaning)


# Presence (CID 6335 / SNOMED CT qualifier values)
PRESENT = CodeTriple("52101004", "SCT", "Present")
ABSENT = CodeTriple("2667000", "SCT", "Absent")

# Findings
FRACTURE = CodeTriple("125605004", "SCT", "Fracture of bone")
PULMONARY_EMBOLISM = CodeTriple("59282003", "SCT", "Pulmonary embolism")
BONE_AGE = CodeTriple("85151-9", "LN", "Bone age")

# UCUM units (CID 7181 / 7182)
YEARS = CodeTriple("a", "UCUM", "year")
MONTHS = CodeTriple("mo", "UCUM", "month")
MILLIMETRE = CodeTriple("mm", "UCUM", "millimeter")
NO_UNITS = CodeTriple("1", "UCUM", "no units")

# Anatomy (CID 7151/4) and laterality (CID 244)
HAND = CodeTriple("85562004", "SCT", "Hand")
WRIST = CodeTriple("8205005", "SCT", "Wrist")
ANKLE = CodeTriple("344001", "SCT", "Ankle")
LUNG = CodeTriple("39607008", "SCT", "Lung")
PULMONARY_ARTERY = CodeTriple("81040000", "SCT", "Pulmonary artery")
LEFT = CodeTriple("7771000", "SCT", "Left")
RIGHT = CodeTriple("24028007", "SCT", "Right")
BILATERAL = CodeTriple("51440002", "SCT", "Right and left")

# Structure (PS3.16 Annex D, DCM)
IMAGING_MEASUREMENT_REPORT = CodeTriple("126000", "DCM", "Imaging Measurement Report")
IMAGING_MEASUREMENTS = CodeTriple("126010", "DCM", "Imaging Measurements")
MEASUREMENT_GROUP = CodeTriple("125007", "DCM", "Measurement Group")
PROCEDURE_REPORTED = CodeTriple("121058", "DCM", "Procedure reported")
LANGUAGE_OF_CONTENT = CodeTriple("121049", "DCM", "Language of Content Item and Descendants")
IMAGE_LIBRARY = CodeTriple("111028", "DCM", "Image Library")
TRACKING_IDENTIFIER = CodeTriple("112039", "DCM", "Tracking Identifier")
TRACKING_UID = CodeTriple("112040", "DCM", "Tracking Unique Identifier")
FINDING = CodeTriple("121071", "DCM", "Finding")
FINDING_SITE = CodeTriple("363698007", "SCT", "Finding Site")
LATERALITY = CodeTriple("272741003", "SCT", "Laterality")
ALGORITHM_NAME = CodeTriple("111001", "DCM", "Algorithm Name")
ALGORITHM_VERSION = CodeTriple("111003", "DCM", "Algorithm Version")
PROCESSING_EQUIPMENT = CodeTriple("109102", "DCM", "Processing Equipment")
ARTIFICIAL_INTELLIGENCE = CodeTriple("123110", "DCM", "Artificial Intelligence")
OF_INTEREST = CodeTriple("113000", "DCM", "Of Interest")
#: Default Procedure Reported (TID 1500 row 4): the generic SNOMED CT imaging procedure.
IMAGING_PROCEDURE = CodeTriple("363679005", "SCT", "Imaging procedure")
