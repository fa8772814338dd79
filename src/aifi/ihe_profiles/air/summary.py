"""What a result says, in a few fields the hub can store and show: its kind, the algorithm
(IHE AIR algorithm identification), and for a TID 1500 SR its findings and measurements.

Header only (no pixel data), tolerant: an unexpected tree yields fewer fields, not errors.
Findings are read from the Measurement Groups (TID 1501/1410): Finding (121071), the
qualitative evaluation whose value is Present/Absent, Finding Site (363698007) with its
Laterality (272741003); groups sharing a Tracking Unique Identifier (one finding on several
regions) count once. Measurements are the NUM items of the groups (TID 300).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from pydicom import Dataset

from aifi.ihe_profiles.air.codes import (
    ABSENT,
    FINDING,
    FINDING_SITE,
    LATERALITY,
    MEASUREMENT_GROUP,
    PRESENT,
    TRACKING_UID,
)
from aifi.ihe_profiles.air.equipment import AlgorithmIdentity
from aifi.ihe_profiles.air.validation import (
    GSPS,
    KEY_OBJECT_SELECTION,
    MULTIFRAME_SC,
    SECONDARY_CAPTURE,
    SEGMENTATION,
    SR_SOP_CLASSES,
)

Code = tuple[str, str, str]
"""A DICOM coded entry: (Code Value, Coding Scheme Designator, Code Meaning)."""


@dataclass(frozen=True, slots=True)
class FindingSummary:
    """A finding: ``name`` is the code meaning, ``code`` the code value; ``present`` is
    None when the result does not say (e.g. a segment). The coded entries (``concept``,
    ``site_code``, ``laterality_code``) carry the full codes for FHIR; they take no part in
    equality, so summaries compare by what they say as before."""

    name: str
    code: str
    present: bool | None
    site: str | None = None
    laterality: str | None = None
    concept: Code | None = field(default=None, compare=False)
    """The finding as a coded entry ``(value, scheme designator, meaning)``."""
    site_code: Code | None = field(default=None, compare=False)
    """Finding Site (363698007) as a coded entry."""
    laterality_code: Code | None = field(default=None, compare=False)
    """Laterality (272741003) of the finding site as a coded entry."""

    def text(self) -> str:
        state = {True: "present", False: "absent", None: "reported"}[self.present]
        where = ", ".join(p.lower() for p in (self.site, self.laterality) if p)
        return f"{self.name}: {state}" + (f" ({where})" if where else "")


@dataclass(frozen=True, slots=True)
class MeasurementSummary:
    """A numeric result: ``unit`` is the UCUM code value (e.g. ``a``); ``concept`` the
    measured concept's coded entry (not part of equality)."""

    name: str
    value: float
    unit: str
    concept: Code | None = field(default=None, compare=False)
    """The measured concept (the NUM item's Concept Name) as a coded entry."""

    def text(self) -> str:
        return f"{self.name}: {self.value:g} {self.unit}".rstrip()


@dataclass(frozen=True)
class ResultSummary:
    kind: str
    algorithm: AlgorithmIdentity | None
    findings: list[FindingSummary] = field(default_factory=list)
    measurements: list[MeasurementSummary] = field(default_factory=list)
    description: str = ""

    @property
    def positive(self) -> bool:
        """True when any finding is present."""
        return any(f.present is True for f in self.findings)

    def text(self) -> str:
        """One human line, e.g. ``Fracture of bone: present (wrist, left)``."""
        parts = [f.text() for f in self.findings] + [m.text() for m in self.measurements]
        if parts:
            return "; ".join(parts)
        if self.kind == "SR":
            return "No findings"
        return self.description or f"{self.kind} result"


def _kind(sop_class: str) -> str:
    if sop_class in SR_SOP_CLASSES:
        return "SR"
    if sop_class == SEGMENTATION:
        return "SEG"
    if sop_class == GSPS:
        return "GSPS"
    if sop_class == SECONDARY_CAPTURE or sop_class in MULTIFRAME_SC:
        return "SC"
    if sop_class == KEY_OBJECT_SELECTION:
        return "KO"
    return "OTHER"


def _code(item: Dataset, keyword: str) -> tuple[str, str, str]:
    """(value, scheme, meaning) of the first item of a code sequence; empty strings when
    there is none."""
    seq = item.get(keyword)
    if not seq:
        return ("", "", "")
    code = seq[0]
    return (
        str(code.get("CodeValue", "")),
        str(code.get("CodingSchemeDesignator", "")),
        str(code.get("CodeMeaning", "")),
    )


def _name(item: Dataset) -> tuple[str, str, str]:
    return _code(item, "ConceptNameCodeSequence")


def _value(item: Dataset) -> tuple[str, str, str]:
    return _code(item, "ConceptCodeSequence")


def _known(code: Code) -> Code | None:
    """``code``, or None when the item has no code (all parts empty)."""
    return code if any(code) else None


def _same(code: tuple[str, str, str], known: tuple[str, str, str]) -> bool:
    return code[:2] == known[:2]


def _walk(items: Sequence[Dataset]) -> Iterator[Dataset]:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def _group(
    group: Dataset,
) -> tuple[str | None, FindingSummary | None, list[MeasurementSummary]]:
    tracking_uid: str | None = None
    finding: tuple[str, str, str] | None = None
    evaluation: tuple[tuple[str, str, str], bool] | None = None
    site: Code | None = None
    laterality: Code | None = None
    measurements: list[MeasurementSummary] = []
    for item in group.get("ContentSequence", []):
        name = _name(item)
        value_type = item.get("ValueType")
        if _same(name, TRACKING_UID):
            tracking_uid = str(item.get("UID", "")) or None
        elif value_type == "CODE" and _same(name, FINDING):
            finding = _value(item)
        elif value_type == "CODE" and _same(name, FINDING_SITE):
            site = _known(_value(item))
            for child in item.get("ContentSequence", []):
                if _same(_name(child), LATERALITY):
                    laterality = _known(_value(child))
        elif value_type == "CODE" and (_same(_value(item), PRESENT) or _same(_value(item), ABSENT)):
            evaluation = (name, _same(_value(item), PRESENT))
        elif value_type == "NUM":
            for measured in item.get("MeasuredValueSequence", []):
                units = measured.get("MeasurementUnitsCodeSequence") or [Dataset()]
                try:
                    number = float(measured.get("NumericValue"))
                except (TypeError, ValueError):
                    continue
                measurements.append(
                    MeasurementSummary(
                        name[2],
                        number,
                        str(units[0].get("CodeValue", "")),
                        concept=_known(name),
                    )
                )
    summary: FindingSummary | None = None
    concept = finding or (evaluation[0] if evaluation else None)
    if concept is not None:
        summary = FindingSummary(
            name=concept[2],
            code=concept[0],
            present=evaluation[1] if evaluation else None,
            site=(site[2] or None) if site else None,
            laterality=(laterality[2] or None) if laterality else None,
            concept=_known(concept),
            site_code=site,
            laterality_code=laterality,
        )
    return tracking_uid, summary, measurements


def summarise(ds: Dataset) -> ResultSummary:
    """The :class:`ResultSummary` of a result instance (header only is enough)."""
    kind = _kind(str(ds.get("SOPClassUID", "")))
    algorithm = AlgorithmIdentity.from_dataset(ds)
    findings: list[FindingSummary] = []
    measurements: list[MeasurementSummary] = []
    if kind == "SR":
        seen: set[str] = set()
        for item in _walk(ds.get("ContentSequence", [])):
            if item.get("ValueType") != "CONTAINER" or not _same(_name(item), MEASUREMENT_GROUP):
                continue
            uid, finding, numbers = _group(item)
            if finding is not None and (uid is None or uid not in seen):
                findings.append(finding)
            if uid is not None:
                seen.add(uid)
            measurements += numbers
    elif kind == "SEG":
        for segment in ds.get("SegmentSequence", []):
            types = segment.get("SegmentedPropertyTypeCodeSequence") or [Dataset()]
            findings.append(
                FindingSummary(
                    name=str(types[0].get("CodeMeaning", segment.get("SegmentLabel", ""))),
                    code=str(types[0].get("CodeValue", "")),
                    present=None,
                    concept=_known(_code(segment, "SegmentedPropertyTypeCodeSequence")),
                )
            )
    description = str(
        ds.get("ContentDescription") or ds.get("ContentLabel") or ds.get("SeriesDescription") or ""
    )
    return ResultSummary(
        kind=kind,
        algorithm=algorithm,
        findings=findings,
        measurements=measurements,
        description=description,
    )
