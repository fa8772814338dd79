"""What every AIR result builder does the same way: the inputs' patient and study, a new
series, the algorithm as equipment, and Part 10 file meta information.

A result lives in the study of the images it was computed from (IHE AIW-I / AIR: results
are "study integrated"), so the Patient (PS3.3 C.7.1.1) and General Study (C.7.2.1)
attributes are copied from the first input; Type 2 attributes are present even when the
input left them empty, as the IODs require.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import deepcopy
from dataclasses import dataclass
from typing import Literal

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from aifi.ihe_profiles.air.equipment import AlgorithmIdentity

#: Patient and General Study attributes taken over from the inputs (Type 2: always present).
TYPE2_CARRIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
#: Optional (Type 3) ones, copied only when the input has them.
TYPE3_CARRIED = ("IssuerOfPatientID", "StudyDescription", "SpecificCharacterSet")

PIXEL_DATA = 0x7FE00010

GraphicType = Literal["POINT", "POLYLINE", "CIRCLE", "ELLIPSE"]

_POINTS = {"POINT": (1, 1), "CIRCLE": (2, 2), "ELLIPSE": (4, 4), "POLYLINE": (2, 10_000)}


@dataclass(frozen=True)
class Region:
    """A 2D region on one source image, in pixel coordinates (column, row) — an SR SCOORD
    (PS3.3 C.18.6) or a GSPS graphic object (C.10.5), depending on the builder.

    POINT: 1 point; CIRCLE: centre and a point on the circle; ELLIPSE: the two end points
    of the major then the minor axis; POLYLINE: 2+ points (closed when first == last).
    """

    source: Dataset
    graphic_type: GraphicType
    points: Sequence[tuple[float, float]]

    def __post_init__(self) -> None:
        if self.graphic_type not in _POINTS:
            raise ValueError(f"unsupported graphic type {self.graphic_type!r}")
        low, high = _POINTS[self.graphic_type]
        if not low <= len(self.points) <= high:
            raise ValueError(
                f"{self.graphic_type} needs {low}-{high} points, got {len(self.points)}"
            )
        for column, row in self.points:
            if column < 0 or row < 0:
                raise ValueError(f"pixel coordinates must be ≥ 0: {(column, row)}")
        if "SOPInstanceUID" not in self.source or "SOPClassUID" not in self.source:
            raise ValueError("a region's source must have SOPClassUID and SOPInstanceUID")

    @property
    def flat(self) -> list[float]:
        """The points as GraphicData: column, row, column, row, ..."""
        return [float(v) for point in self.points for v in point]


def require_inputs(inputs: Sequence[Dataset]) -> None:
    """Every builder needs at least one input, all in one study."""
    if not inputs:
        raise ValueError("a result needs at least one input instance")
    studies = {str(ds.StudyInstanceUID) for ds in inputs}
    if len(studies) != 1:
        raise ValueError(f"the inputs span {len(studies)} studies; a result belongs to one")


def headers(inputs: Sequence[Dataset]) -> list[Dataset]:
    """Copies of the inputs' headers (no pixel data) with every Type 2 patient/study
    attribute present, for highdicom, which reads them from its reference dataset.

    Deep copies, element by element: highdicom puts the reference's elements into the
    object it builds, so a shared element would tie the result to the input (changing the
    result's Patient ID would change the input's)."""
    copies: list[Dataset] = []
    for ds in inputs:
        copy = Dataset()
        for element in ds:
            if element.tag != PIXEL_DATA:
                copy.add(deepcopy(element))
        for keyword in TYPE2_CARRIED:
            if keyword not in copy:
                setattr(copy, keyword, "")
        copies.append(copy)
    return copies


def series_laterality(ds: Dataset, source: Dataset) -> None:
    """General Series (PS3.3 C.7.3.1) Laterality, Type 2C for a paired body part: dciodvfy
    asks for it in GSPS and SC (it cannot tell whether the part is paired); the source's
    left/right, or present and empty (unknown)."""
    laterality = source.get("Laterality") or source.get("ImageLaterality") or ""
    ds.Laterality = laterality if laterality in ("L", "R") else ""


def carry_over(ds: Dataset, source: Dataset) -> None:
    """Copy the patient and study of ``source`` into ``ds`` (Type 2 ones even if empty)."""
    ds.StudyInstanceUID = source.StudyInstanceUID
    for keyword in TYPE2_CARRIED:
        setattr(ds, keyword, source.get(keyword, "") or "")
    for keyword in TYPE3_CARRIED:
        if source.get(keyword):
            setattr(ds, keyword, source.get(keyword))


def finish(
    ds: Dataset,
    inputs: Sequence[Dataset],
    algorithm: AlgorithmIdentity,
    series_description: str,
) -> Dataset:
    """Common tail of every builder: study carry-over, equipment, series description and
    Part 10 file meta information (PS3.10 §7.1)."""
    carry_over(ds, inputs[0])
    algorithm.apply(ds)
    ds.SeriesDescription = series_description[:64]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    old = getattr(ds, "file_meta", None)
    meta.TransferSyntaxUID = (
        old.TransferSyntaxUID
        if old is not None and "TransferSyntaxUID" in old
        else ExplicitVRLittleEndian
    )
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds
