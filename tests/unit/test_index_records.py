"""The index values the store reads from an instance's DICOM JSON (``attributes.*_record``)
are the ones pydicom gives for the same data set (the reference below, which is how the
index was filled before): over every file bundled with pydicom that has the identifying
UIDs (STOW-RS refuses the others), the character-set files included, and over generated
edge cases (multi-valued text, person names with several groups, odd integers)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom.data.data_manager import DATA_ROOT
from pydicom.errors import InvalidDicomError

from aifi.dicomweb.attributes import (
    InstanceRecord,
    SeriesRecord,
    StudyRecord,
    _normal_date,
    instance_record,
    series_record,
    study_record,
)
from aifi.dicomweb.dicomjson import configure_pydicom, dataset_to_metadata

BUNDLED = sorted(
    p
    for folder in ("test_files", "charset_files")
    for p in (Path(DATA_ROOT) / folder).rglob("*")
    if p.is_file() and p.suffix not in (".py", ".json", ".txt", ".gz", ".icc", ".dump")
)
IDENTIFIERS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


# -- the reference: the records from pydicom's view of the data set ------------------------


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value)


def _pn(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None or str(value) == "" else str(value)


def _int(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _reference(ds: Dataset) -> tuple[StudyRecord, SeriesRecord, InstanceRecord]:
    bits = ds.get("BitsAllocated")
    return (
        StudyRecord(
            StudyInstanceUID=str(ds.StudyInstanceUID),
            StudyDate=_normal_date(_text(ds, "StudyDate")),
            StudyTime=_text(ds, "StudyTime"),
            AccessionNumber=_text(ds, "AccessionNumber"),
            PatientName=_pn(ds, "PatientName"),
            PatientID=_text(ds, "PatientID"),
            StudyID=_text(ds, "StudyID"),
            ReferringPhysicianName=_pn(ds, "ReferringPhysicianName"),
            StudyDescription=_text(ds, "StudyDescription"),
        ),
        SeriesRecord(
            SeriesInstanceUID=str(ds.SeriesInstanceUID),
            Modality=_text(ds, "Modality"),
            SeriesNumber=_int(ds, "SeriesNumber"),
            PerformedProcedureStepStartDate=_normal_date(
                _text(ds, "PerformedProcedureStepStartDate")
            ),
            PerformedProcedureStepStartTime=_text(ds, "PerformedProcedureStepStartTime"),
        ),
        InstanceRecord(
            SOPInstanceUID=str(ds.SOPInstanceUID),
            SOPClassUID=str(ds.SOPClassUID),
            InstanceNumber=_int(ds, "InstanceNumber"),
            NumberOfFrames=_int(ds, "NumberOfFrames"),
            Rows=_int(ds, "Rows"),
            Columns=_int(ds, "Columns"),
            BitsAllocated=bits if isinstance(bits, int) else None,
        ),
    )


# -- the comparison -------------------------------------------------------------------------


def _read(path: Path) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path, defer_size=1024)
    except (InvalidDicomError, OSError, ValueError, EOFError, KeyError, NotImplementedError):
        return None
    return ds if all(ds.get(k) for k in IDENTIFIERS) else None


def _records(ds: Dataset) -> tuple[Any, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metadata = dataset_to_metadata(ds)
        from_json = (study_record(metadata), series_record(metadata), instance_record(metadata))
        from_pydicom = _reference(ds)
    return from_json, from_pydicom


INSTANCES = [p for p in BUNDLED if _read(p) is not None]
"""The bundled files STOW-RS would store: readable, with their identifying UIDs."""


def test_bundled_files_are_found() -> None:
    assert len(INSTANCES) > 50


@pytest.mark.parametrize("path", INSTANCES, ids=lambda p: p.name)
def test_bundled_file_gives_the_same_records(path: Path) -> None:
    configure_pydicom()
    ds = _read(path)
    assert ds is not None
    from_json, from_pydicom = _records(ds)
    assert from_json == from_pydicom


def _generated(**values: Any) -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = "1.2.3.4"
    ds.SOPInstanceUID = "1.2.3.4.5"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize(
    "values",
    [
        {
            "PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう",
            "SpecificCharacterSet": "ISO_IR 192",
        },
        {"PatientName": "=山田^太郎", "SpecificCharacterSet": "ISO_IR 192"},
        {"PatientName": "Doe^John", "ReferringPhysicianName": ""},
        {"AccessionNumber": ["A1", "", "A3"], "Modality": ["CT", "PT"]},
        {"StudyDate": "2024.01.31", "PerformedProcedureStepStartDate": "20240131"},
        {"StudyDate": "2024-01-31", "StudyTime": "101010.5"},
        {"SeriesNumber": "7", "InstanceNumber": "-3", "NumberOfFrames": "1"},
        {"SeriesNumber": ["1", "2"], "Rows": 512, "Columns": 256},
        {"StudyDescription": "Ärzte — Überweisung", "SpecificCharacterSet": "ISO_IR 192"},
    ],
)
def test_generated_values_give_the_same_records(values: dict[str, Any]) -> None:
    configure_pydicom()
    from_json, from_pydicom = _records(_generated(**values))
    assert from_json == from_pydicom
