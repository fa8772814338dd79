"""A converter for AI products that answer only with pictures: Secondary Capture images or
Grayscale Softcopy Presentation States, no structured report.

:class:`ConvertingAnalyzer` wraps the product's :class:`~aifi.vendors.performer.Analyzer`
and, after it ran:

* adds the IHE AIR algorithm identification — a Contributing Equipment Sequence (0018,A001)
  item with Purpose of Reference (109102, DCM, "Processing Equipment"), Manufacturer,
  Manufacturer's Model Name, Software Versions and Device UID — to each of the vendor's
  objects that lacks one (IHE RAD TF AIR; the identity is given to the converter);
* when the outputs hold no SR, adds a TID 1500 Measurement Report (PS3.16 TID 1500/1501/
  1410, built by :func:`aifi.ihe_profiles.air.measurement_report`) with what can be read
  structurally:

  - GSPS (PS3.3 C.10.5 Graphic Annotation): each graphic object in PIXEL units on an input
    image becomes a :class:`~aifi.ihe_profiles.air.Region` of one present finding (the
    finding code is configurable; the product drew something, so something was found);
  - SC (PS3.3 A.8): a finding from a caller-supplied function, else from the SC's Image
    Comments (0020,4000) or Derivation Description (0008,2111) text ("no fracture
    detected" → absent, "fracture detected" → present; text saying neither gives nothing).

Nothing readable, no report: the converter never invents a negative result.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence

from aifi.dicom_json import DicomJson
from aifi.ihe_profiles import air
from aifi.ihe_profiles.air import AlgorithmIdentity, QualitativeFinding, Region
from aifi.ihe_profiles.air.codes import Code
from aifi.vendors.performer import Analyzer

__all__ = [
    "ConvertingAnalyzer",
    "add_identification",
    "finding_from_text",
    "regions_from_gsps",
]

log = logging.getLogger(__name__)

GSPS = "1.2.840.10008.5.1.4.1.1.11.1"
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
SC_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image
        "1.2.840.10008.5.1.4.1.1.7.1",  # Multi-frame Single Bit SC
        "1.2.840.10008.5.1.4.1.1.7.2",  # Multi-frame Grayscale Byte SC
        "1.2.840.10008.5.1.4.1.1.7.3",  # Multi-frame Grayscale Word SC
        "1.2.840.10008.5.1.4.1.1.7.4",  # Multi-frame True Color SC
    }
)
FINDING = ("121071", "DCM", "Finding")
"""Default finding code for converted results when the caller names none."""
TRACKING_ID = "converted finding"
SERIES_DESCRIPTION = "AI result (TID 1500, converted)"

_NEGATIVE = re.compile(
    r"\b(no|not|without|negative|absent|none|geen|kein|keine|pas de)\b", re.IGNORECASE
)
_POSITIVE = re.compile(
    r"\b(detected|present|positive|found|suspected|suspicious|likely)\b", re.IGNORECASE
)

ScFinding = Callable[[Dataset], QualitativeFinding | None]
"""Reads a finding from a vendor's Secondary Capture (None: it says nothing)."""


def add_identification(ds: Dataset, algorithm: AlgorithmIdentity) -> bool:
    """Add ``algorithm`` as a Processing Equipment item to ``ds``'s Contributing Equipment
    Sequence when ``ds`` has none (keeping other items) and fill an absent General Equipment
    Manufacturer / Model Name / Software Versions (PS3.3 C.7.5.1); True when it added."""
    if AlgorithmIdentity.from_dataset(ds) is not None:
        return False
    items = list(ds.get("ContributingEquipmentSequence", []))
    ds.ContributingEquipmentSequence = DicomSequence([*items, algorithm.contributing_equipment()])
    for keyword, value in (
        ("Manufacturer", algorithm.manufacturer),
        ("ManufacturerModelName", algorithm.model_name),
        ("SoftwareVersions", algorithm.software_version),
    ):
        if not ds.get(keyword):
            setattr(ds, keyword, value)
    return True


def finding_from_text(
    text: str, finding: Code, *, tracking_id: str = TRACKING_ID
) -> QualitativeFinding | None:
    """A present/absent finding from a free-text statement: a negation ("no", "not",
    "negative", "absent", ...) makes it absent, else a positive word ("detected",
    "present", "positive", "found", "suspected", ...) present; neither: None."""
    if not text.strip():
        return None
    if _NEGATIVE.search(text):
        return QualitativeFinding(finding, False, tracking_id)
    if _POSITIVE.search(text):
        return QualitativeFinding(finding, True, tracking_id)
    return None


def _graphic_type(value: str) -> str | None:
    """GSPS Graphic Type (PS3.3 C.10.5.1.2) as a Region type; INTERPOLATED is drawn
    through its points, so a polyline is its closest SCOORD reading."""
    return {
        "POINT": "POINT",
        "POLYLINE": "POLYLINE",
        "INTERPOLATED": "POLYLINE",
        "CIRCLE": "CIRCLE",
        "ELLIPSE": "ELLIPSE",
    }.get(value.upper())


def _gsps_images(gsps: Dataset) -> list[str]:
    """Every image the presentation state applies to (Referenced Series Sequence)."""
    return [
        str(ref.ReferencedSOPInstanceUID)
        for series in gsps.get("ReferencedSeriesSequence", [])
        for ref in series.get("ReferencedImageSequence", [])
        if "ReferencedSOPInstanceUID" in ref
    ]


def regions_from_gsps(gsps: Dataset, inputs: Sequence[Dataset]) -> list[Region]:
    """The graphic objects of a GSPS's Graphic Annotation Sequence (PS3.3 C.10.5) as
    regions on the input images they annotate: only PIXEL-unit objects (DISPLAY units are
    relative to the screen, not the image) on images that are among ``inputs``; an
    annotation without Referenced Image Sequence applies to every image of the state."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in inputs}
    regions: list[Region] = []
    for annotation in gsps.get("GraphicAnnotationSequence", []):
        refs = [
            str(r.ReferencedSOPInstanceUID)
            for r in annotation.get("ReferencedImageSequence", [])
            if "ReferencedSOPInstanceUID" in r
        ] or _gsps_images(gsps)
        for graphic in annotation.get("GraphicObjectSequence", []):
            kind = _graphic_type(str(graphic.get("GraphicType", "")))
            units = str(graphic.get("GraphicAnnotationUnits", ""))
            data = [float(v) for v in graphic.get("GraphicData", [])]
            if kind is None or units != "PIXEL" or len(data) < 2 or len(data) % 2:
                continue
            points = list(zip(data[::2], data[1::2], strict=True))
            for uid in refs:
                if uid not in by_uid:
                    continue
                try:
                    regions.append(Region(by_uid[uid], kind, points))  # type: ignore[arg-type]
                except ValueError as exc:
                    log.info("GSPS graphic not converted: %s", exc)
    return regions


class ConvertingAnalyzer:
    """An :class:`~aifi.vendors.performer.Analyzer` around a vendor ``inner`` analyzer whose
    results are SC/GSPS only (module docstring). ``finding`` is the finding code of the
    converted report; ``sc_finding`` reads a finding from an SC (default: its text)."""

    def __init__(
        self,
        inner: Analyzer,
        algorithm: AlgorithmIdentity,
        *,
        finding: Code = FINDING,
        finding_site: Code | None = None,
        sc_finding: ScFinding | None = None,
        series_description: str = SERIES_DESCRIPTION,
    ) -> None:
        self.inner = inner
        self.algorithm = algorithm
        self.finding = finding
        self.finding_site = finding_site
        self.sc_finding = sc_finding
        self.series_description = series_description

    def _from_sc(self, sc: Dataset) -> QualitativeFinding | None:
        if self.sc_finding is not None:
            return self.sc_finding(sc)
        text = " ".join(
            str(sc.get(keyword) or "") for keyword in ("ImageComments", "DerivationDescription")
        )
        return finding_from_text(text, self.finding)

    def findings(
        self, outputs: Sequence[Dataset], inputs: Sequence[Dataset]
    ) -> list[QualitativeFinding]:
        """What the vendor's SC/GSPS outputs say, as TID 1500 findings."""
        regions: list[Region] = []
        found: list[QualitativeFinding] = []
        for ds in outputs:
            sop_class = str(ds.get("SOPClassUID", ""))
            if sop_class == GSPS:
                regions += regions_from_gsps(ds, inputs)
            elif sop_class in SC_CLASSES and (finding := self._from_sc(ds)) is not None:
                found.append(finding)
        if regions:
            found.insert(
                0,
                QualitativeFinding(
                    self.finding,
                    True,
                    TRACKING_ID,
                    finding_site=self.finding_site,
                    regions=regions,
                ),
            )
        return found

    def analyze(self, workitem: DicomJson, inputs: list[Dataset]) -> list[Dataset]:
        outputs = list(self.inner.analyze(workitem, inputs))
        for ds in outputs:
            if add_identification(ds, self.algorithm):
                log.info("Added the algorithm identification to %s", ds.get("SOPInstanceUID"))
        if any(str(ds.get("SOPClassUID", "")).startswith(SR_PREFIX) for ds in outputs):
            return outputs
        findings = self.findings(outputs, inputs)
        if not findings:
            if outputs:
                log.warning("Nothing structured to convert in %d vendor object(s)", len(outputs))
            return outputs
        report = air.measurement_report(
            inputs,
            self.algorithm,
            findings=findings,
            series_description=self.series_description,
        )
        return [*outputs, report]
