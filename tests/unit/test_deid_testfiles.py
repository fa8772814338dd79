"""pydicom's bundled test files (every transfer syntax and character set they cover) pass
through the pseudonymiser and come out pseudonymised: no original name, ID or instance UID
in any value or in the written bytes, pixel data untouched, every value still decodable.
Files that may show burned-in text (Secondary Capture, US, OT without Burned In Annotation
NO) are quarantined; fragments without SOP Instance UID are refused as invalid."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_charset_files, get_testdata_files
from pydicom.valuerep import PersonName

from aifi.errors import InvalidRequest
from aifi.gateway.deid import Profile, Pseudonymiser, Quarantine
from aifi.gateway.deid.files import write_part10
from aifi.gateway.deid.pseudonymise import check_burned_in

KEY = bytes(range(32))
INSTANCE_UIDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "ReferencedSOPInstanceUID",
    "ReferencedFrameOfReferenceUID",
)


def _files() -> list[Path]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # files pydicom would download are not needed
        found = get_testdata_files("*.dcm") + get_charset_files("*.dcm")
    return sorted(Path(name) for name in found)


FILES = _files()


def _read(path: Path) -> Dataset | None:
    try:
        return dcmread(path, force=True)
    except Exception:  # unreadable test files are simply not used
        return None


def all_values(ds: Dataset) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    stack = [ds]
    while stack:
        current = stack.pop()
        for element in current:
            if element.VR == "SQ":
                stack.extend(element.value or [])
                continue
            value = element.value
            if value is None or isinstance(value, bytes):
                continue
            items = (
                [value]
                if isinstance(value, str | PersonName)
                else (list(value) if hasattr(value, "__iter__") else [value])
            )
            found.extend((element.keyword, str(item)) for item in items)
    return found


def _identifiers(ds: Dataset) -> tuple[set[str], set[str]]:
    uids = {value for keyword, value in all_values(ds) if keyword in INSTANCE_UIDS and value}
    names = {
        str(ds.get(keyword, ""))
        for keyword in ("PatientName", "PatientID", "OtherPatientIDs", "ReferringPhysicianName")
    }
    return uids, {name for name in names if len(name.strip("^ ")) > 3}


@pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")
@pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")
@pytest.mark.parametrize("path", FILES, ids=[path.name for path in FILES])
def test_test_file_comes_out_pseudonymised(path: Path) -> None:
    source = _read(path)
    if source is None or not all(
        keyword in source for keyword in ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID")
    ):
        with pytest.raises(InvalidRequest):
            Pseudonymiser(Profile(), KEY).pseudonymise_file(path.read_bytes())
        return
    try:
        check_burned_in(source)
    except Quarantine:
        with pytest.raises(Quarantine, match="Burned In Annotation"):
            Pseudonymiser(Profile(), KEY).pseudonymise_file(path.read_bytes())
        # Declared free of burned-in text, the same instance goes through.
        source.BurnedInAnnotation = "NO"
    buffer = io.BytesIO()
    try:
        source.save_as(buffer)
    except TypeError:
        # Read leniently (explicit VR announced, implicit found): not encodable again, so
        # the pseudonymiser refuses it instead of sending something half-written.
        with pytest.raises(InvalidRequest, match="cannot be encoded"):
            write_part10(Pseudonymiser(Profile(), KEY).pseudonymise(source).dataset)
        return
    uids, names = _identifiers(source)

    written, facts = Pseudonymiser(Profile(), KEY).pseudonymise_file(buffer.getvalue())
    out = dcmread(io.BytesIO(written))

    assert out.PatientIdentityRemoved == "YES"
    assert out.SOPInstanceUID != source.SOPInstanceUID
    assert facts.uids[out.SOPInstanceUID] == source.SOPInstanceUID
    assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    values = all_values(out)  # every value decodes in the output's character set
    for keyword, value in values:
        assert value not in uids, (keyword, value)
        for name in names:
            assert name not in value, (keyword, value)
    for uid in uids:
        if len(uid) > 8:  # a real UID, not a placeholder such as "0"
            assert uid.encode() not in written
    for name in names:
        for encoding in ("utf-8", "latin-1"):
            with contextlib.suppress(UnicodeEncodeError):
                assert name.encode(encoding) not in written
    if "PixelData" in source:
        assert out.PixelData == source.PixelData
    assert not [element for element in out if element.tag.is_private]


def test_the_character_set_files_are_all_used() -> None:
    names = {path.name for path in FILES}
    assert {"chrRuss.dcm", "chrJapMulti.dcm", "chrArab.dcm", "chrGreek.dcm"} <= names
    assert {"CT_small.dcm", "MR_small_bigendian.dcm", "rtplan.dcm", "test-SR.dcm"} <= names
