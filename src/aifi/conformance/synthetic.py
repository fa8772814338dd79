"""Synthetic DICOM studies made by code, for the demo, benchmarks and conformance kits.

Never patient data: names and identifiers are invented, pixels are a drawn phantom.
CT-like: 512×512, 16-bit signed-ish (12 bits stored) axial slices of a cylinder phantom
(~0.5 MB each); DX-like: 2500×2048 16-bit (~10 MB) with a gradient and a "bone" block.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    generate_uid,
)

from aifi.dicomweb.part10 import with_file_meta


@dataclass(frozen=True, slots=True)
class Patient:
    name: str = "Demo^Anna"
    patient_id: str = "AIFI-DEMO-0001"
    birth_date: str = "19800101"
    sex: str = "F"


def _base(sop_class: str, patient: Patient, study_uid: str, accession: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.StudyInstanceUID = study_uid
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyDate = "20260115"
    ds.StudyTime = "101500"
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = "Verwijzer^Jan"
    ds.StudyID = "1"
    ds.InstitutionName = "aifi-hub demo hospital"
    ds.Manufacturer = "aifi-hub synthetic"
    return ds


def _monochrome16(ds: Dataset, pixels: np.ndarray[Any, np.dtype[np.uint16]]) -> None:
    """Image Pixel module for 16-bit allocated, 12-bit stored MONOCHROME2 ``pixels``."""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()


def _finish(ds: Dataset) -> bytes:
    with_file_meta(ds)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ct_study(
    slices: int,
    *,
    series: int = 1,
    size: int = 512,
    patient: Patient | None = None,
    study_uid: str | None = None,
    accession: str = "DEMO-CT-1",
) -> Iterator[bytes]:
    """Part 10 files of one CT study: ``series`` series of ``slices`` slices each."""
    patient = patient or Patient()
    study_uid = study_uid or generate_uid()
    yy, xx = np.mgrid[0:size, 0:size]
    radius = np.hypot(yy - size / 2, xx - size / 2)
    body = radius < size * 0.42
    for s in range(series):
        series_uid = generate_uid()
        frame_uid = generate_uid()
        for i in range(slices):
            ds = _base(CTImageStorage, patient, study_uid, accession)
            ds.SOPInstanceUID = generate_uid()
            ds.SeriesInstanceUID = series_uid
            ds.FrameOfReferenceUID = frame_uid
            ds.Modality = "CT"
            ds.SeriesNumber = s + 1
            ds.SeriesDescription = f"Synthetic CT series {s + 1}"
            ds.BodyPartExamined = "CHEST"
            ds.InstanceNumber = i + 1
            ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.ImagePositionPatient = [-128.0, -128.0, float(i)]
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.PixelSpacing = [0.5, 0.5]
            ds.SliceThickness = 1.0
            ds.KVP = 120
            ds.RescaleIntercept = -1024
            ds.RescaleSlope = 1
            ds.WindowCenter = 40
            ds.WindowWidth = 400
            lesion = np.hypot(yy - size * 0.4, xx - size * (0.35 + 0.001 * i)) < size * 0.05
            pixels = np.where(body, 1024 + 40, 24).astype(np.uint16)
            pixels[lesion] = 1024 + 300
            _monochrome16(ds, pixels)
            yield _finish(ds)


def dx_study(
    images: int = 1,
    *,
    patient: Patient | None = None,
    study_uid: str | None = None,
    accession: str = "DEMO-DX-1",
) -> Iterator[bytes]:
    """Part 10 files of a DX study of ~10 MB images (2500×2048, 16-bit)."""
    patient = patient or Patient()
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    rows, columns = 2500, 2048
    gradient = (
        np.linspace(200, 3000, columns, dtype=np.float32)[None, :] * np.ones((rows, 1), np.float32)
    ).astype(np.uint16)
    for i in range(images):
        ds = _base(DigitalXRayImageStorageForPresentation, patient, study_uid, accession)
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "DX"
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.BodyPartExamined = "HAND"
        ds.WindowCenter = 1600
        ds.WindowWidth = 3000
        pixels = gradient.copy()
        pixels[800 + 10 * i : 1600, 700:1300] = 3900
        _monochrome16(ds, pixels)
        yield _finish(ds)


def small_instance(
    study: dict[str, str], *, series: int = 2, per_series: int = 5, size: int = 8
) -> Iterator[bytes]:
    """Tiny instances (``size``² pixels) of one study described by ``study`` (PatientName,
    PatientID, AccessionNumber, StudyDate, Modality2), for filling an index quickly.
    Writes the generated StudyInstanceUID and first SeriesInstanceUID back into ``study``."""
    study_uid = study.setdefault("StudyInstanceUID", generate_uid())
    patient = Patient(name=study["PatientName"], patient_id=study["PatientID"])
    pixels = np.zeros((size, size), np.uint16)
    for s in range(series):
        series_uid = generate_uid()
        study.setdefault("SeriesInstanceUID", series_uid)
        modality = "CT" if s == 0 else study.get("Modality2", "MR")
        for i in range(per_series):
            ds = _base(CTImageStorage, patient, study_uid, study["AccessionNumber"])
            ds.StudyDate = study["StudyDate"]
            ds.SOPInstanceUID = generate_uid()
            ds.SeriesInstanceUID = series_uid
            ds.Modality = modality
            ds.SeriesNumber = s + 1
            ds.InstanceNumber = i + 1
            _monochrome16(ds, pixels)
            yield _finish(ds)


def radiograph_study(
    images: int = 1,
    *,
    body_part: str = "HAND",
    description: str = "X hand left",
    modality: str = "DX",
    patient: Patient | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    accession: str = "DEMO-XR-1",
    size: int = 64,
) -> Iterator[bytes]:
    """Small radiographs (``size``² pixels) of one study, e.g. a child's hand for the
    skeletal-age product or an ankle for fracture detection; ``images`` in one series."""
    patient = patient or Patient(
        name="Demo^Kind", patient_id="AIFI-DEMO-0002", birth_date="20150301"
    )
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    sop_class = (
        DigitalXRayImageStorageForPresentation if modality == "DX" else "1.2.840.10008.5.1.4.1.1.1"
    )
    for i in range(images):
        ds = _base(sop_class, patient, study_uid, accession)
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.Modality = modality
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.BodyPartExamined = body_part
        ds.StudyDescription = description
        ds.SeriesDescription = description
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        if modality == "DX":
            ds.PresentationIntentType = "FOR PRESENTATION"
        pixels = np.full((size, size), 400 + 10 * i, np.uint16)
        _monochrome16(ds, pixels)
        yield _finish(ds)
