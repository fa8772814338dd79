"""The fast DICOM JSON encoder (``aifi.dicomweb.header_json``) gives exactly what pydicom's
conversion gives (``dicomjson.pydicom_metadata``): over every file bundled with pydicom
(read from disk under ``pydicom.data.DATA_ROOT``, never downloaded), and over generated
raw values that probe each value representation's edge cases.

Results are compared as JSON text, so that NaN values compare equal and a ``UID`` or
``str`` subclass cannot hide a difference in what is stored.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydicom import Dataset, dcmread
from pydicom._dicom_dict import DicomDictionary
from pydicom.data.data_manager import DATA_ROOT
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.tag import BaseTag

from aifi.dicomweb import header_json
from aifi.dicomweb.dicomjson import dataset_to_metadata, pydicom_metadata

BUNDLED = sorted(
    p
    for folder in ("test_files", "charset_files")
    for p in (Path(DATA_ROOT) / folder).rglob("*")
    if p.is_file() and p.suffix not in (".py", ".json", ".txt", ".gz", ".icc", ".dump")
)


def _dump(metadata: Any) -> str:
    return json.dumps(metadata, sort_keys=True)


def _both(read: Any) -> tuple[str, str]:
    """(fast, reference) for two independent reads (pydicom converts in place)."""
    results = []
    for encode in (dataset_to_metadata, pydicom_metadata):
        try:
            with warnings.catch_warnings():
                # As in the server: pydicom's warnings (e.g. about a character set it
                # must guess at) are logged, not raised, and do not change the result.
                warnings.simplefilter("ignore")
                results.append(_dump(encode(read())))
        except Exception as exc:  # both paths must fail alike
            results.append(f"{type(exc).__name__}")
    return results[0], results[1]


def test_the_fast_path_is_on_with_the_hub_configuration() -> None:
    assert header_json.enabled()


def test_pydicom_bundle_is_found() -> None:
    assert len(BUNDLED) > 100


@pytest.mark.parametrize("defer_size", [1024, None])
@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: p.relative_to(DATA_ROOT).as_posix())
def test_bundled_files_encode_as_pydicom_does(path: Path, defer_size: int | None) -> None:
    data = path.read_bytes()

    def read() -> Dataset:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(io.BytesIO(data), defer_size=defer_size, force=True)

    try:
        read()
    except Exception:
        pytest.skip("pydicom cannot read it")
    fast, reference = _both(read)
    assert fast == reference


def _tag_for(vr: str) -> int:
    return next(
        tag for tag, entry in sorted(DicomDictionary.items()) if entry[0] == vr and tag > 0x8FFFF
    )


TEXT_VALUES = [
    b"",
    b" ",
    b"  ",
    b"\x00",
    b"A",
    b"A ",
    b" A",
    b" A ",
    b"A\x00",
    b"A\\B",
    b"A\\",
    b"\\A",
    b"\\",
    b"\\\\",
    b"A \\ B ",
    b"A\x00\\B\x00",
    b"A=B",
    b"A^B=C^D=E^F",
    b"A^B=",
    b"=B",
    b"==",
    b"A==C",
    b"A=B=C=D",
    b"A\\=B",
    b"A\\\\B",
    b"Line1\r\nLine2",
    b"tab\there",
    b"1.2.840.10008.1.2\x00",
    b" 1.2.3 \\ 4.5 ",
    b"20200101",
    b"20200101-20201231",
    b"101500.123456 ",
    b"caf\xe9",
    b"\x1b$B",
    b"ESC\x1b(B",
    b"x\x1c",
    b"y\x85",
]
NUMBER_VALUES = [
    b"",
    b" ",
    b"0",
    b"1 ",
    b" 1",
    b"-1",
    b"+1",
    b"007",
    b"1.0",
    b"1.5",
    b".5",
    b"5.",
    b"-.5e-3",
    b"1E10",
    b"1e",
    b"1,5",
    b"1_0",
    b"nan",
    b"inf",
    b"-Infinity",
    b"1\\2\\3",
    b"1\\\\3",
    b"1\\",
    b"1.0\\-2.5 ",
    b"12345678901234567890",
    b"123456789012345",
    b"1234567890123456",
    b"99999999999999999999.0",
    b"0x10",
    b"1 2",
    b"\x001",
    b"1\x00",
    b"1 \x00",
    b"\t1",
    b"\xb9",
]
BINARY_VALUES = [
    b"",
    b"\x01",
    b"\x01\x02",
    b"\x01\x02\x03",
    b"\x00\x00\x80\x3f",
    b"\xff" * 4,
    b"\x00\x00\xc0\x7f",  # NaN as FL
    b"\x01\x02\x03\x04\x05\x06\x07\x08",
    b"\x10\x00\x20\x00\x30\x00\x40\x00",
    bytes(range(256)) * 3,
    bytes(range(256)) * 3 + b"\x00",
    bytes(769),
    bytes(1025),
]
VALUES: dict[str, list[bytes]] = {
    **dict.fromkeys(("AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH"), TEXT_VALUES),
    **dict.fromkeys(("ST", "TM", "UC", "UI", "UR", "UT"), TEXT_VALUES),
    "IS": NUMBER_VALUES,
    "DS": NUMBER_VALUES,
    **dict.fromkeys(("AT", "FD", "FL", "SL", "SS", "SV", "UL", "US", "UV"), BINARY_VALUES),
    **dict.fromkeys(("OB", "OD", "OF", "OL", "OV", "OW", "UN"), BINARY_VALUES),
}
CHARSETS = [None, "ISO_IR 100", "ISO_IR 192", "ISO 2022 IR 87", "ISO_IR 13", "GB18030"]
CASES = [
    (vr, value, charset)
    for vr, values in VALUES.items()
    for value in values
    for charset in (CHARSETS if vr in ("LO", "PN", "SH", "LT") else [None])
]


def _raw_dataset(
    vr: str,
    value: bytes | None,
    charset: str | None,
    little: bool = True,
    length: int = -1,
    implicit: bool = False,
) -> Dataset:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    tag = BaseTag(_tag_for(vr) if vr != "UN" else 0x00191010)
    ds._dict[tag] = RawDataElement(
        tag,
        None if implicit else vr,
        len(value or b"") if length < 0 else length,
        value,
        0,
        implicit,
        little,
    )
    return ds


@pytest.mark.parametrize(("vr", "value", "charset"), CASES, ids=repr)
def test_raw_values_encode_as_pydicom_does(vr: str, value: bytes, charset: str | None) -> None:
    for little, implicit in ((True, False), (False, False), (True, True)):
        fast, reference = _both(
            lambda: _raw_dataset(vr, value, charset, little, implicit=implicit)  # noqa: B023
        )
        assert fast == reference


@pytest.mark.parametrize("vr", ["OB", "OW", "OF"])
@pytest.mark.parametrize("length", [800, 2000])
def test_deferred_binary_values_become_bulk_data_without_being_read(vr: str, length: int) -> None:
    ds = _raw_dataset(vr, None, None, length=length)
    [(key, attribute)] = dataset_to_metadata(ds).items()
    assert attribute == {"vr": vr, "BulkDataURI": key}
    assert next(iter(ds._dict.values())).value is None  # still deferred


def test_converted_elements_encode_as_pydicom_does() -> None:
    def build() -> Dataset:
        ds = Dataset()
        ds.PatientID = "P-1"
        ds.AccessionNumber = ""
        ds.StudyInstanceUID = "1.2.3"
        ds.Rows = 512
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.PatientName = "Doe^Jane"
        ds.SliceThickness = "1.5"
        ds.add(DataElement(0x00280101, "US", True))
        return ds

    fast, reference = _both(build)
    assert fast == reference


def test_a_nan_float_is_kept() -> None:
    ds = _raw_dataset("FL", struct.pack("<f", float("nan")), None)
    [(_, attribute)] = dataset_to_metadata(ds).items()
    assert attribute["vr"] == "FL" and attribute["Value"][0] != attribute["Value"][0]
