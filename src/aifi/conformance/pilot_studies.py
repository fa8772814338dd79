"""Generated studies for the three pilot use cases, with the answer drawn into the pixels.

Made by code for tests, the demo and vendor conformance kits — never patient data: names
and identifiers are invented, the anatomy is a drawn phantom. Each function returns complete
image instances (File Meta set, Part-10 ready) that

* the shipped routing rules (``aifi/ihe_profiles/default_rules.yaml``) send to the intended
  product: :func:`hand_xray` to AIFI-BONEAGE (and AIFI-FRACTURE, a hand being appendicular),
  :func:`extremity_xray` to AIFI-FRACTURE, :func:`chest_ct` to AIFI-IPE;
* carry a known "truth" in the image content only, deterministically (fixed random seeds),
  which the reference products (:mod:`aifi.vendors.products`) read back from the pixels —
  the headers never say it:

  - bone age: the bones' brightness relative to the soft tissue grows with ``age_years``
    (:data:`BONE_CONTRAST_AT_BIRTH` + :data:`BONE_CONTRAST_PER_YEAR` × age), as
    mineralisation does, with seeded noise for texture;
  - fracture: a dark transverse line (:data:`FRACTURE_GAP_ROWS` rows) across the radius
    shaft;
  - pulmonary embolism: a dark (~40 HU) filling defect inside the contrast-filled (~330 HU)
    pulmonary artery on :data:`EMBOLISM_SLICES` of the slices.

Images are small so tests stay fast: 256×256 radiographs (DX, For Presentation, 12 bits
stored), 128×128 CT slices. The modules follow PS3.3 A.26 (Digital X-Ray Image IOD) and
A.3 (CT Image IOD) so that ``dciodvfy`` reports no errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    generate_uid,
)

from aifi.conformance.synthetic import Patient
from aifi.dicomweb.part10 import with_file_meta

__all__ = [
    "BACKGROUND",
    "BODY_PART_CODES",
    "BONE_CONTRAST_AT_BIRTH",
    "BONE_CONTRAST_PER_YEAR",
    "CT_SIZE",
    "EMBOLISM_SLICES",
    "FRACTURE_COLUMNS",
    "FRACTURE_GAP_ROWS",
    "FRACTURE_ROW",
    "SOFT_TISSUE",
    "XRAY_SIZE",
    "Patient",
    "chest_ct",
    "embolism_slices",
    "extremity_xray",
    "hand_xray",
    "hounsfield",
    "study_json",
]

XRAY_SIZE = 256
CT_SIZE = 128
BACKGROUND = 100
"""Stored value of air around the body part on a radiograph."""
SOFT_TISSUE = 800
"""Stored value of soft tissue on a radiograph (bones are brighter, MONOCHROME2)."""
BONE_CONTRAST_AT_BIRTH = 0.10
BONE_CONTRAST_PER_YEAR = 0.10
"""Bone brightness = SOFT_TISSUE × (1 + AT_BIRTH + PER_YEAR × age in years)."""
FRACTURE_GAP_ROWS = 3
EMBOLISM_SLICES = 4
FRACTURE_ROW = 120
"""First row of the fracture line at the radius's left edge (column 90); it drops one row
every 8 columns."""
FRACTURE_COLUMNS = (90, 122)
"""The radius's columns [start, stop) in :func:`extremity_xray`."""
STUDY_DATE = date(2026, 1, 15)

_DX_LATERALITY = ("L", "R")

BODY_PART_CODES: dict[str, tuple[str, str, str]] = {
    "HAND": ("85562004", "SCT", "Hand"),
    "FINGER": ("7569003", "SCT", "Finger"),
    "WRIST": ("74670003", "SCT", "Wrist joint"),
    "FOREARM": ("14975008", "SCT", "Forearm"),
    "ELBOW": ("16953009", "SCT", "Elbow joint"),
    "HUMERUS": ("85050009", "SCT", "Humerus"),
    "SHOULDER": ("16982005", "SCT", "Shoulder"),
    "KNEE": ("72696002", "SCT", "Knee"),
    "ANKLE": ("70258002", "SCT", "Ankle joint"),
    "FOOT": ("56459004", "SCT", "Foot"),
    "CHEST": ("816094009", "SCT", "Chest"),
}
"""Anatomic Region Sequence codes for Body Part Examined values (PS3.16 CID 4031 and
Annex L), for the body parts these studies use."""


def _birth_date(age_years: float) -> str:
    """A birth date that makes the patient ``age_years`` old on :data:`STUDY_DATE`."""
    days = round(age_years * 365.25)
    born = date.fromordinal(STUDY_DATE.toordinal() - days)
    return born.strftime("%Y%m%d")


def _age_string(age_years: float) -> str:
    """Patient's Age (0010,1010), AS: completed years, or months under two (PS3.5 6.2)."""
    if age_years < 2:
        return f"{int(age_years * 12):03d}M"
    return f"{int(age_years):03d}Y"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _base(
    sop_class: str,
    patient: Patient,
    *,
    study_uid: str,
    series_uid: str,
    accession: str,
    description: str,
    age: str | None,
) -> Dataset:
    """Patient (C.7.1.1), General Study (C.7.2.1), Patient Study (C.7.2.2), General Series
    (C.7.3.1), General Equipment (C.7.5.1), General Image (C.7.6.1) and SOP Common (C.12.1)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    if age:
        ds.PatientAge = age
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = "Pilot^Referrer"
    ds.StudyID = "1"
    ds.StudyDescription = description
    ds.SeriesDescription = description
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.InstitutionName = "aifi-hub pilot hospital"
    ds.Manufacturer = "aifi-hub synthetic"
    ds.ManufacturerModelName = "pilot_studies"
    ds.SoftwareVersions = "1"
    ds.BurnedInAnnotation = "NO"
    return ds


def _pixels(ds: Dataset, pixels: np.ndarray[Any, Any], *, signed: bool = False) -> None:
    """Image Pixel module (C.7.6.3): 16 bits allocated, 12 stored, MONOCHROME2."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12 if not signed else 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = np.int16 if signed else np.uint16
    ds.PixelData = pixels.astype(dtype).tobytes()


def _noise(shape: tuple[int, int], seed: int, scale: float) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).normal(0.0, scale, shape)


# -- radiographs ----------------------------------------------------------------------------


def _dx(
    pixels: np.ndarray[Any, Any],
    patient: Patient,
    *,
    body_part: str,
    laterality: str,
    description: str,
    accession: str,
    age: str | None,
    study_uid: str | None,
) -> Dataset:
    """One DX For Presentation image (PS3.3 A.26: DX Series C.8.11.1, DX Anatomy Imaged
    C.8.11.2, DX Image C.8.11.3, DX Detector C.8.11.4, VOI LUT C.11.2)."""
    ds = _base(
        DigitalXRayImageStorageForPresentation,
        patient,
        study_uid=study_uid or generate_uid(),
        series_uid=generate_uid(),
        accession=accession,
        description=description,
        age=age,
    )
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = body_part
    ds.ImageLaterality = laterality
    region = BODY_PART_CODES.get(body_part)
    ds.AnatomicRegionSequence = [_code(*region)] if region else []
    ds.PatientOrientation = ["A", "F"] if laterality == "L" else ["P", "F"]
    ds.ViewPosition = "PA"
    ds.ViewCodeSequence = [_code("399348003", "SCT", "postero-anterior")]
    ds.PositionerType = "COLUMN"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.AcquisitionDeviceProcessingDescription = ""
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.WindowCenter = 1400
    ds.WindowWidth = 2800
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.DetectorType = "SCINTILLATOR"
    ds.DetectorConfiguration = "AREA"
    ds.AcquisitionContextSequence = []
    ds.KVP = 55
    _pixels(ds, np.clip(pixels, 0, 4095))
    return with_file_meta(ds)


def _bone_value(age_years: float) -> float:
    return SOFT_TISSUE * (1 + BONE_CONTRAST_AT_BIRTH + BONE_CONTRAST_PER_YEAR * age_years)


def hand_xray(
    *,
    age_years: float,
    laterality: str = "L",
    patient: Patient | None = None,
    study_uid: str | None = None,
    accession: str = "PILOT-HAND-1",
    seed: int = 1,
) -> list[Dataset]:
    """A child's hand radiograph (one DX image): a palm and five fingers of soft tissue,
    each finger with a continuous bone (no joint gaps: this is a phantom), the metacarpals
    in the palm. Bone brightness encodes ``age_years`` (see the module docstring); the
    header says the same age (Patient's Age and Birth Date) only so routing can work."""
    if not 0 <= age_years <= 19:
        raise ValueError(f"A bone-age hand is 0-19 years old, not {age_years}")
    if laterality not in _DX_LATERALITY:
        raise ValueError(f"Image Laterality is L or R here, not {laterality!r}")
    patient = patient or Patient(
        name="Pilot^Kind",
        patient_id="AIFI-PILOT-HAND",
        birth_date=_birth_date(age_years),
        sex="O",
    )
    n = XRAY_SIZE
    image = np.full((n, n), float(BACKGROUND))
    bone = _bone_value(age_years)
    image[150:240, 60:200] = SOFT_TISSUE  # palm
    for i in range(5):
        left = 62 + 28 * i
        top = 70 if i else 130  # the thumb (i == 0) is short
        image[top:150, left : left + 20] = SOFT_TISSUE  # finger
        image[top + 6 : 142, left + 6 : left + 14] = bone  # phalanges
        image[156:232, left + 6 : left + 14] = bone  # metacarpal, after the MCP joint
    image[236:256, 80:180] = SOFT_TISSUE  # wrist
    image += _noise(image.shape, seed, 12.0)
    return [
        _dx(
            image,
            patient,
            body_part="HAND",
            laterality=laterality,
            description=f"X hand {'left' if laterality == 'L' else 'right'}",
            accession=accession,
            age=_age_string(age_years),
            study_uid=study_uid,
        )
    ]


def extremity_xray(
    *,
    fracture: bool,
    body_part: str = "WRIST",
    laterality: str = "L",
    patient: Patient | None = None,
    study_uid: str | None = None,
    accession: str = "PILOT-XR-1",
    seed: int = 2,
) -> list[Dataset]:
    """An adult extremity radiograph (one DX image): a soft-tissue band with two long bones
    (radius and ulna); with ``fracture`` a slightly oblique dark line of
    :data:`FRACTURE_GAP_ROWS` rows crosses the radius at :func:`fracture_row`."""
    if laterality not in _DX_LATERALITY:
        raise ValueError(f"Image Laterality is L or R here, not {laterality!r}")
    patient = patient or Patient(
        name="Pilot^Volwassene", patient_id="AIFI-PILOT-XR", birth_date="19750610", sex="M"
    )
    n = XRAY_SIZE
    image = np.full((n, n), float(BACKGROUND))
    bone = _bone_value(30)
    image[:, 70:190] = SOFT_TISSUE
    image[:, 90:122] = bone  # radius
    image[:, 140:164] = bone  # ulna
    if fracture:
        for column in range(90, 122):
            top = FRACTURE_ROW + (column - 90) // 8
            image[top : top + FRACTURE_GAP_ROWS, column] = SOFT_TISSUE
    image += _noise(image.shape, seed, 12.0)
    age = (STUDY_DATE.year - int(patient.birth_date[:4])) if patient.birth_date else None
    return [
        _dx(
            image,
            patient,
            body_part=body_part.upper(),
            laterality=laterality,
            description=f"X {body_part.lower()} {'left' if laterality == 'L' else 'right'}",
            accession=accession,
            age=_age_string(age) if age is not None and 0 <= age < 150 else None,
            study_uid=study_uid,
        )
    ]


# -- CT ---------------------------------------------------------------------------------------

HU_AIR, HU_LUNG, HU_SOFT, HU_BONE, HU_CONTRAST, HU_CLOT = -1000, -850, 40, 700, 330, 40
ARTERY_CENTRE = (52, 64)
"""(row, column) of the pulmonary trunk on each slice."""
ARTERY_RADIUS = 11
CLOT_RADIUS = 4


def embolism_slices(slices: int) -> range:
    """The slices (0-based) that show the filling defect in :func:`chest_ct`."""
    first = max(0, slices // 2 - EMBOLISM_SLICES // 2)
    return range(first, min(slices, first + EMBOLISM_SLICES))


def chest_ct(
    *,
    embolism: bool,
    slices: int = 20,
    patient: Patient | None = None,
    study_uid: str | None = None,
    accession: str = "PILOT-CT-1",
    seed: int = 3,
) -> list[Dataset]:
    """A contrast-enhanced chest CT (one axial series, 1 mm slices): body, two lungs,
    spine, and a contrast-filled pulmonary artery; with ``embolism`` a round dark filling
    defect sits inside the artery on :func:`embolism_slices`. Header: Contrast/Bolus Agent
    and "with contrast" descriptions, so routing sends it to AIFI-IPE."""
    if slices < EMBOLISM_SLICES:
        raise ValueError(f"At least {EMBOLISM_SLICES} slices, not {slices}")
    patient = patient or Patient(
        name="Pilot^Thorax", patient_id="AIFI-PILOT-CT", birth_date="19580302", sex="F"
    )
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    n = CT_SIZE
    yy, xx = np.mgrid[0:n, 0:n]
    body = ((yy - n / 2) / (n * 0.36)) ** 2 + ((xx - n / 2) / (n * 0.46)) ** 2 < 1
    lungs = [((yy - 62) / 30) ** 2 + ((xx - cx) / 20) ** 2 < 1 for cx in (36, 92)]
    spine = np.hypot(yy - 94, xx - 64) < 9
    artery = np.hypot(yy - ARTERY_CENTRE[0], xx - ARTERY_CENTRE[1]) < ARTERY_RADIUS
    clot = np.hypot(yy - ARTERY_CENTRE[0], xx - ARTERY_CENTRE[1] - 2) < CLOT_RADIUS
    with_clot = set(embolism_slices(slices)) if embolism else set()
    out = []
    for i in range(slices):
        hu = np.full((n, n), float(HU_AIR))
        hu[body] = HU_SOFT
        for lung in lungs:
            hu[lung] = HU_LUNG
        hu[spine] = HU_BONE
        hu[artery] = HU_CONTRAST
        if i in with_clot:
            hu[clot] = HU_CLOT
        hu += _noise((n, n), seed * 1000 + i, 8.0)
        ds = _base(
            CTImageStorage,
            patient,
            study_uid=study_uid,
            series_uid=series_uid,
            accession=accession,
            description="CT chest with contrast",
            age=_age_string(STUDY_DATE.year - int(patient.birth_date[:4])),
        )
        ds.Modality = "CT"
        ds.InstanceNumber = i + 1
        ds.BodyPartExamined = "CHEST"
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "FFS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-n * 0.35, -n * 0.35, -100.0 + float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = -100.0 + float(i)
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.KVP = 120
        ds.AcquisitionNumber = 1
        ds.ContrastBolusAgent = "Iohexol 350"
        ds.ContrastBolusRoute = "IV"
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = 100
        ds.WindowWidth = 700
        _pixels(ds, np.clip(np.rint(hu) + 1024, 0, 4095))
        out.append(with_file_meta(ds))
    return out


def hounsfield(ds: Dataset) -> np.ndarray[Any, np.dtype[np.float64]]:
    """A CT slice's pixels in Hounsfield units (Rescale Slope/Intercept, PS3.3 C.11.1.1.2)."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return np.asarray(ds.pixel_array, dtype=np.float64) * slope + intercept


def study_json(instances: Sequence[Dataset]) -> list[dict[str, Any]]:
    """The instances' headers as DICOM JSON (PS3.18 F.2), as the hub's index holds them —
    for routing them with :func:`aifi.ihe_profiles.rules.evaluate` in tests."""
    out = []
    for ds in instances:
        header = Dataset()
        for elem in ds:
            if elem.keyword != "PixelData":
                header.add(elem)
        out.append(header.to_json_dict())
    return out
