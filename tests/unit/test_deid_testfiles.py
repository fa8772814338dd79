"""pydicom's bundled test files (every transfer syntax and character set they cover) pass
through the pseudonymiser and come out pseudonymised: no original name, ID or instance UID
in any value or in the written bytes, pixel data untouched, every value still decodable.
Files that may show burned-in text (Secondary Capture, US, OT without Burned In Annotation
NO) are quarantined; fragments without SOP Instance UID are refused as invalid."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from pydicom import Dataset, dcmread
from pydicom.valuerep import PersonName

from aifi.errors import InvalidRequest
from aifi.gateway.deid import Profile, Pseudonymiser, Quarantine
from aifi.gateway.deid.files import write_part10
from aifi.gateway.deid.pseudonymise import check_burned_in
from tests.support.dicom import bundled_files

KEY = bytes(range(32))
INSTANCE_UIDS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "FrameOfReferenceUID",
    "ReferencedSOPInstanceUID",
    "ReferencedFrameOfReferenceUID",
)


FILES = bundled_files("*.dcm")


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


# -- the pixel data carried over as bytes (files.split_pixel_data) -----------------------------


def _whole(pseudonymiser: Pseudonymiser, data: bytes) -> bytes:
    """What the pseudonymiser writes when it reads and writes the whole file with pydicom."""
    from aifi.gateway.deid.files import read_part10

    ds = read_part10(data)
    pseudonymiser.pseudonymise(ds)
    return write_part10(ds)


@pytest.mark.filterwarnings("ignore:Expected explicit VR:UserWarning")
@pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")
def test_carrying_the_pixel_data_over_writes_the_same_file_as_reading_it_whole() -> None:
    """Wherever the header is split from the pixel data, the pseudonymised file is byte for
    byte what reading and writing it whole gives; the files that are split cover native and
    encapsulated pixel data, implicit and explicit VR."""
    from aifi.gateway.deid.files import split_pixel_data

    pseudonymiser = Pseudonymiser(Profile(), KEY)
    split: set[str] = set()
    for path in FILES:
        data = path.read_bytes()
        if split_pixel_data(data) is None:
            continue
        try:
            expected = _whole(pseudonymiser, data)
        except (Quarantine, InvalidRequest) as exc:
            with pytest.raises(type(exc)):
                pseudonymiser.pseudonymise_file(data)
            continue
        assert pseudonymiser.pseudonymise_file(data)[0] == expected, path.name
        split.add(path.name)
    assert {
        "MR_small_implicit.dcm",  # native, implicit VR
        "liver_1frame.dcm",  # native, explicit VR
        "693_J2KI.dcm",  # encapsulated
        "rtdose_rle.dcm",  # encapsulated, several frames
    } <= split


def _with_trailer(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name", ["CT_small.dcm", "MR_small_bigendian.dcm", "image_dfl.dcm", "MR_truncated.dcm"]
)
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_files_it_cannot_carry_over_are_read_whole(name: str) -> None:
    """Elements after the pixel data (CT_small's trailing padding), big endian, deflate, a
    truncated pixel data element: read whole, as before."""
    from aifi.gateway.deid.files import split_pixel_data

    [path] = [p for p in FILES if p.name == name]
    assert split_pixel_data(path.read_bytes()) is None


def test_a_private_element_after_the_pixel_data_is_not_carried_over() -> None:
    """A private element after Pixel Data (as some vendors write) makes the file be read
    whole, so that the profile removes it."""
    from aifi.gateway.deid.files import split_pixel_data

    [path] = [p for p in FILES if p.name == "MR_small_RLE.dcm"]
    ds = dcmread(path)
    ds.add_new(0x7FE10010, "LO", "ACME CSA")
    ds.add_new(0x7FE11001, "LO", "JANSEN^JAN")
    data = _with_trailer(ds)
    assert split_pixel_data(data) is None
    written, _ = Pseudonymiser(Profile(), KEY).pseudonymise_file(data)
    assert b"JANSEN" not in written
