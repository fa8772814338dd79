"""Test data made by code: small synthetic studies (no patient data, ever); and the test
files installed with pydicom."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

if TYPE_CHECKING:
    from aifi.dicomweb.store import DicomStore, StoreOutcome


def bundled_files(pattern: str = "*.dcm") -> list[Path]:
    """The test and character set files installed with pydicom (``test_files/**``,
    ``charset_files/*`` under ``pydicom.data.DATA_ROOT``) matching ``pattern``, read from
    disk. pydicom's ``get_testdata_files`` also tries to download the ``pydicom-data``
    files, which costs 15 s per call where there is no network and adds nothing here."""
    from pydicom.data.data_manager import DATA_ROOT

    root = Path(DATA_ROOT)
    found = [*(root / "test_files").rglob(pattern), *(root / "charset_files").glob(pattern)]
    return sorted(p for p in found if p.is_file())


def make_ct(
    *,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    patient_name: str = "Test^Patient",
    patient_id: str = "PID-0001",
    study_date: str = "20260101",
    study_time: str = "120000",
    accession: str = "ACC-0001",
    modality: str = "CT",
    instance_number: int = 1,
    series_number: int = 1,
    rows: int = 16,
    columns: int = 16,
    charset: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> Dataset:
    """A small valid CT Image (16-bit, MONOCHROME2) with a gradient, explicit VR LE."""
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession
    ds.ReferringPhysicianName = "Ref^Doctor"
    ds.StudyID = "1"
    ds.StudyDescription = "Synthetic study"
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.FrameOfReferenceUID = generate_uid()
    ds.ImagePositionPatient = [0, 0, instance_number]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.SliceThickness = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.KVP = 120
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    pixels = (np.arange(rows * columns, dtype=np.uint16).reshape(rows, columns) * 7) % 4096
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """Part 10 bytes (preamble, DICM, file meta, data set)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def make_study(n_series: int = 2, per_series: int = 3, **kwargs: object) -> list[Dataset]:
    study_uid = str(kwargs.pop("study_uid", None) or generate_uid())
    out = []
    for s in range(n_series):
        series_uid = generate_uid()
        for i in range(per_series):
            out.append(
                make_ct(
                    study_uid=study_uid,
                    series_uid=series_uid,
                    series_number=s + 1,
                    instance_number=i + 1,
                    **kwargs,  # type: ignore[arg-type]
                )
            )
    return out


def multipart_related(
    parts: Iterable[bytes],
    boundary: str = "aifi-test-boundary",
    content_type: str = "application/dicom",
) -> tuple[bytes, str]:
    """Encode parts as multipart/related; returns (body, Content-Type header value)."""
    chunks = []
    for part in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode())
        chunks.append(part)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    header = f'multipart/related; type="{content_type}"; boundary={boundary}'
    return b"".join(chunks), header


def ingest(
    store: DicomStore, datasets: Iterable[Dataset | bytes], tenant: str = "default"
) -> list[StoreOutcome]:
    """Put datasets straight into a DicomStore (bypassing STOW-RS), for QIDO/WADO tests."""
    import hashlib

    from pydicom import dcmread

    from aifi.dicomweb.dicomjson import dataset_to_metadata
    from aifi.dicomweb.store import IncomingInstance

    items = []
    for ds in datasets:
        data = to_bytes(ds) if not isinstance(ds, bytes) else ds
        digest = hashlib.sha256(data).hexdigest()
        staged = store.staging_dir() / f"test-{digest}"
        staged.write_bytes(data)
        header = dcmread(staged, defer_size=1024)
        items.append(
            IncomingInstance(
                staged_path=staged,
                size=len(data),
                sha256=digest,
                transfer_syntax_uid=str(header.file_meta.TransferSyntaxUID),
                header=header,
                metadata=dataset_to_metadata(header),
            )
        )
    return store.put(tenant, items)
