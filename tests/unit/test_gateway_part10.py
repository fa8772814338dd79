"""The C-STORE path's fast header scan (:func:`aifi.gateway.ingest.part10.scan_header`): it gives
the header :func:`read_header` (pydicom) gives for regular data sets — implicit and
explicit VR, sequences and items of defined and undefined length, encapsulated pixel data,
a private UN sequence — and hands everything else back (``None``) to :func:`read_header`,
which decides: truncation anywhere, trailing bytes, stray delimiters, unknown VRs, missing,
repeated, mistyped or invalid UIDs, big endian and deflated data sets. Whatever it
accepts, :func:`read_header` accepts with the same answer: it may only be faster."""

from __future__ import annotations

import io
import struct
import warnings

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from aifi.gateway.ingest.part10 import (
    PREAMBLE,
    InstanceHeader,
    Unreadable,
    dataset_offset,
    encode_file_meta,
    read_header,
    scan_header,
)
from tests.support.dicom import bundled_files

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
SOP_INSTANCE = "1.2.826.0.1.3680043.8.498.1"
STUDY = "1.2.826.0.1.3680043.8.498.2"
SERIES = "1.2.826.0.1.3680043.8.498.3"
EXPECTED = (SOP_CLASS, SOP_INSTANCE, STUDY, SERIES)


def _item(**values: str) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def dataset(
    *,
    undefined: bool = False,
    encapsulated: bool = False,
    private_un: bool = False,
    trailing_padding: bool = False,
) -> Dataset:
    """A CT-like data set with a nested sequence (its items of undefined length when
    ``undefined``), optionally encapsulated pixel data and a private UN sequence."""
    ds = Dataset()
    ds.SOPClassUID = SOP_CLASS
    ds.SOPInstanceUID = SOP_INSTANCE
    ds.StudyDate = "20260101"
    ds.Modality = "CT"
    ds.PatientName = "Planted^Patient"
    ds.PatientID = "PLANTED-1"
    inner = _item(CodeValue="T-D3000", CodingSchemeDesignator="SRT", CodeMeaning="Chest")
    outer = _item(ReferencedSOPClassUID=SOP_CLASS, ReferencedSOPInstanceUID="1.2.3.4")
    outer.AnatomicRegionSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([outer, _item(ReferencedSOPInstanceUID="1.2.3.5")])
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 8 if encapsulated else 16
    ds.PixelRepresentation = 0
    if undefined:
        for element in (ds["ReferencedImageSequence"], outer["AnatomicRegionSequence"]):
            element.is_undefined_length = True
        for item in (outer, inner, ds.ReferencedImageSequence[1]):
            item.is_undefined_length_sequence_item = True
    if private_un:
        ds.add(DataElement(0x00091010, "UN", b"", is_undefined_length=True))
    if encapsulated:
        ds.add(DataElement(0x7FE00010, "OB", encapsulate([b"\x01\x02\x03\x04"] * 2)))
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = b"\x00\x01" * 4
    if trailing_padding:
        ds.add(DataElement(0xFFFCFFFC, "OB", b"\x00" * 8))
    return ds


def encode(ds: Dataset, *, implicit: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


def with_private_un(data: bytes, *, implicit: bool) -> bytes:
    """Insert a private element of VR UN and undefined length holding one implicit VR item
    (PS3.5 §6.2.2: its value is implicit VR little endian) before (0010,0010)."""
    nested = struct.pack("<HHI", 0x0009, 0x0011, 4) + b"abcd"
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + nested
    item += struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    if implicit:
        head = struct.pack("<HHI", 0x0009, 0x1010, 0xFFFFFFFF)
    else:
        head = struct.pack("<HH", 0x0009, 0x1010) + b"UN\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
    private = struct.pack("<HHI", 0x0009, 0x0010, 4) if implicit else None
    if private is None:
        private = struct.pack("<HH", 0x0009, 0x0010) + b"LO" + struct.pack("<H", 4)
    private += b"TEST"
    at = data.index(struct.pack("<HH", 0x0010, 0x0010))
    return data[:at] + private + head + item + end + data[at:]


def slow(data: bytes, transfer_syntax: str) -> InstanceHeader | str:
    """What read_header says of the data set as a Part 10 file (the reason when it
    refuses)."""
    part10 = PREAMBLE + encode_file_meta(SOP_CLASS, SOP_INSTANCE, transfer_syntax) + data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return read_header(io.BytesIO(part10), len(part10))
        except Unreadable as exc:
            return exc.reason


def uids(header: InstanceHeader) -> tuple[str, str, str, str]:
    return (
        header.sop_class_uid,
        header.sop_instance_uid,
        header.study_instance_uid,
        header.series_instance_uid,
    )


VARIANTS = {
    "defined": {},
    "undefined": {"undefined": True},
    "encapsulated": {"encapsulated": True},
    "undefined-encapsulated": {"undefined": True, "encapsulated": True},
    "trailing-padding": {"trailing_padding": True},
}
ENCODINGS = [
    pytest.param(variant, implicit, id=f"{variant}-{'implicit' if implicit else 'explicit'}")
    for variant, options in VARIANTS.items()
    for implicit in (True, False)
    # encapsulated pixel data exists only in explicit VR (PS3.5 A.4)
    if not (implicit and options.get("encapsulated"))
]


@pytest.mark.parametrize(("variant", "implicit"), ENCODINGS)
def test_regular_data_sets_are_scanned_as_pydicom_reads_them(variant: str, implicit: bool) -> None:
    options = VARIANTS[variant]
    syntax = ImplicitVRLittleEndian if implicit else JPEGBaseline8Bit
    if not options.get("encapsulated") and not implicit:
        syntax = ExplicitVRLittleEndian
    data = encode(dataset(**options), implicit=implicit)
    header = scan_header(data, syntax)
    assert header is not None
    assert uids(header) == EXPECTED
    assert header.transfer_syntax_uid == syntax
    assert header == slow(data, syntax)
    assert scan_header(memoryview(data), syntax) == header  # a view of the buffer will do


@pytest.mark.parametrize("implicit", [True, False], ids=["implicit", "explicit"])
def test_a_private_un_sequence_of_undefined_length_is_walked_as_implicit_vr(
    implicit: bool,
) -> None:
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    data = with_private_un(encode(dataset(undefined=True), implicit=implicit), implicit=implicit)
    header = scan_header(data, syntax)
    assert header is not None and uids(header) == EXPECTED
    assert header == slow(data, syntax)


@pytest.mark.parametrize(
    ("variant", "implicit"),
    [p for p in ENCODINGS if p.values[0] in ("undefined", "encapsulated", "defined")],
)
def test_a_data_set_cut_anywhere_is_never_accepted_unless_pydicom_accepts_it(
    variant: str, implicit: bool
) -> None:
    options = VARIANTS[variant]
    syntax = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    data = encode(dataset(**options), implicit=implicit)
    accepted = 0
    for cut in range(len(data)):
        header = scan_header(data[:cut], syntax)
        if header is not None:  # only at an element boundary after the UIDs
            accepted += 1
            assert header == slow(data[:cut], syntax), cut
    # only the five element boundaries after the Series Instance UID (before Rows, Columns,
    # Bits Allocated, Pixel Representation, Pixel Data): a shorter data set pydicom reads too
    assert accepted == 5


@pytest.mark.parametrize("extra", [b"\x00", b"\x00\x00", b"\xfe\xff\x00\xe0", b"\x00" * 7])
def test_bytes_after_the_last_element_are_left_to_pydicom(extra: bytes) -> None:
    data = encode(dataset(), implicit=False) + extra
    assert scan_header(data, ExplicitVRLittleEndian) is None


def _explicit(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
        return (
            struct.pack("<HH", group, element)
            + vr
            + b"\x00\x00"
            + struct.pack("<I", len(value))
            + value
        )
    return struct.pack("<HH", group, element) + vr + struct.pack("<H", len(value)) + value


def _uid_value(uid: str) -> bytes:
    raw = uid.encode()
    return raw + b"\x00" if len(raw) % 2 else raw


def _minimal(**replace: bytes) -> bytes:
    """The four UID elements (explicit VR), any of them replaced by other bytes."""
    parts = {
        "class": _explicit(0x0008, 0x0016, b"UI", _uid_value(SOP_CLASS)),
        "instance": _explicit(0x0008, 0x0018, b"UI", _uid_value(SOP_INSTANCE)),
        "study": _explicit(0x0020, 0x000D, b"UI", _uid_value(STUDY)),
        "series": _explicit(0x0020, 0x000E, b"UI", _uid_value(SERIES)),
    }
    parts.update(replace)
    return b"".join(parts.values())


def test_the_minimal_data_set_is_scanned() -> None:
    header = scan_header(_minimal(), ExplicitVRLittleEndian)
    assert header is not None and uids(header) == EXPECTED


@pytest.mark.parametrize(
    "replace",
    [
        {"series": b""},  # missing
        {"study": b""},
        {"class": b""},
        {"instance": b""},
        {"series": _explicit(0x0020, 0x000E, b"LO", _uid_value(SERIES))},  # not UI
        {"series": _explicit(0x0020, 0x000E, b"UI", b"1.2.abc\x00")},  # not a UID
        {"series": _explicit(0x0020, 0x000E, b"UI", b"1.2.3X")},  # not a UID at its end
        {"series": _explicit(0x0020, 0x000E, b"UI", b"")},  # empty
        {"series": _explicit(0x0020, 0x000E, b"UI", b"\x00 ")},  # only padding
        {"series": _explicit(0x0020, 0x000E, b"UI", "1.2.é".encode())},  # not ASCII
        {"series": _explicit(0x0020, 0x000E, b"UI", b"1." + b"1" * 70)},  # too long
        {"series": _explicit(0x0020, 0x000E, b"ZZ", b"12")},  # not a VR
        {  # twice
            "series": _explicit(0x0020, 0x000E, b"UI", _uid_value(SERIES)) * 2,
        },
        {  # an item delimiter at the top level
            "series": _explicit(0x0020, 0x000E, b"UI", _uid_value(SERIES))
            + struct.pack("<HHI", 0xFFFE, 0xE00D, 0),
        },
        {  # undefined length on a VR that cannot have it
            "series": _explicit(0x0020, 0x000E, b"UI", _uid_value(SERIES))
            + struct.pack("<HH", 0x0040, 0xA160)
            + b"UT\x00\x00"
            + struct.pack("<I", 0xFFFFFFFF),
        },
        {  # a long VR's length past the end
            "series": _explicit(0x0020, 0x000E, b"UI", _uid_value(SERIES))
            + struct.pack("<HH", 0x7FE0, 0x0010)
            + b"OB\x00\x00"
            + struct.pack("<I", 100)
            + b"\x00" * 10,
        },
        {  # a long VR's header cut
            "series": _explicit(0x0020, 0x000E, b"UI", _uid_value(SERIES))
            + struct.pack("<HH", 0x7FE0, 0x0010)
            + b"OB\x00\x00",
        },
    ],
    ids=[
        "no-series",
        "no-study",
        "no-class",
        "no-instance",
        "series-as-LO",
        "not-a-uid",
        "not-a-uid-at-the-end",
        "empty-uid",
        "padding-only-uid",
        "non-ascii-uid",
        "uid-too-long",
        "unknown-vr",
        "repeated-uid",
        "item-delimiter-at-top",
        "undefined-ut",
        "value-past-the-end",
        "long-header-cut",
    ],
)
def test_irregular_data_sets_are_left_to_pydicom(replace: dict[str, bytes]) -> None:
    assert scan_header(_minimal(**replace), ExplicitVRLittleEndian) is None


def _sequence(*items: bytes, end: bytes | None = None) -> bytes:
    head = struct.pack("<HH", 0x0008, 0x1140) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
    closing = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0) if end is None else end
    return head + b"".join(items) + closing


def _undefined_item(body: bytes, end: bytes | None = None) -> bytes:
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) if end is None else end
    return struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + body + closing


def _defined_item(body: bytes) -> bytes:
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(body)) + body


BODY = _explicit(0x0008, 0x1155, b"UI", b"1.2.3.4\x00")


@pytest.mark.parametrize(
    "sequence",
    [
        _sequence(_undefined_item(BODY), _defined_item(BODY)),
        _sequence(),
        _sequence(_undefined_item(b"")),
        _sequence(_undefined_item(_sequence(_undefined_item(BODY)))),
    ],
    ids=["two-items", "empty", "empty-item", "nested"],
)
def test_sequences_of_undefined_length_are_walked(sequence: bytes) -> None:
    data = _minimal(instance=_explicit(0x0008, 0x0018, b"UI", _uid_value(SOP_INSTANCE)) + sequence)
    header = scan_header(data, ExplicitVRLittleEndian)
    assert header is not None and uids(header) == EXPECTED
    assert header == slow(data, ExplicitVRLittleEndian)


@pytest.mark.parametrize(
    "sequence",
    [
        _sequence(_undefined_item(BODY), end=struct.pack("<HHI", 0xFFFE, 0xE0DD, 4)),
        _sequence(_undefined_item(BODY, end=struct.pack("<HHI", 0xFFFE, 0xE00D, 2))),
        _sequence(_undefined_item(BODY), end=b""),  # no sequence delimiter: runs on
        _sequence(BODY),  # an element where an item belongs
        _sequence(_undefined_item(BODY, end=b""), end=b""),  # an item running to the end
        _sequence(_undefined_item(BODY, end=struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))),
        _sequence(struct.pack("<HHI", 0xFFFE, 0xE000, 1000) + BODY),  # item past the end
        _sequence(struct.pack("<HH", 0xFFFE, 0xE000)),  # item header cut
    ],
    ids=[
        "delimiter-with-length",
        "item-delimiter-with-length",
        "no-sequence-delimiter",
        "element-instead-of-item",
        "item-to-the-end",
        "sequence-delimiter-ends-item",
        "item-past-the-end",
        "item-header-cut",
    ],
)
def test_broken_sequences_are_left_to_pydicom(sequence: bytes) -> None:
    data = _minimal(instance=_explicit(0x0008, 0x0018, b"UI", _uid_value(SOP_INSTANCE)) + sequence)
    assert scan_header(data, ExplicitVRLittleEndian) is None


def test_a_uid_inside_a_sequence_is_not_the_instance_s() -> None:
    nested = _explicit(0x0020, 0x000E, b"UI", _uid_value("1.2.999"))
    sequence = _sequence(_undefined_item(nested), _defined_item(nested))
    data = _minimal(instance=_explicit(0x0008, 0x0018, b"UI", _uid_value(SOP_INSTANCE)) + sequence)
    header = scan_header(data, ExplicitVRLittleEndian)
    assert header is not None and header.series_instance_uid == SERIES


@pytest.mark.parametrize("vr", [b"OB", b"OW"])
def test_encapsulated_fragments_of_undefined_length_are_left_to_pydicom(vr: bytes) -> None:
    """Fragments have lengths (PS3.5 A.4): an item of undefined length inside OB/OW of
    undefined length is irregular, even when what it holds would read as a data set."""
    pixel = (
        struct.pack("<HH", 0x7FE0, 0x0010)
        + vr
        + b"\x00\x00"
        + struct.pack("<I", 0xFFFFFFFF)
        + _defined_item(b"")
        + _undefined_item(BODY)
        + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    )
    assert scan_header(_minimal() + pixel, ExplicitVRLittleEndian) is None
    fragments = pixel.replace(_undefined_item(BODY), _defined_item(b"\x01\x02"))
    assert scan_header(_minimal() + fragments, ExplicitVRLittleEndian) is not None


def test_a_zero_length_element_may_end_the_data_set() -> None:
    for syntax, element in (
        (ExplicitVRLittleEndian, struct.pack("<HH", 0x0020, 0x0011) + b"IS\x00\x00"),
        (ImplicitVRLittleEndian, struct.pack("<HHI", 0x0020, 0x0011, 0)),
    ):
        data = _minimal() + element
        if syntax == ImplicitVRLittleEndian:
            data = (
                b"".join(
                    struct.pack("<HHI", group, number, len(_uid_value(uid))) + _uid_value(uid)
                    for (group, number), uid in zip(
                        ((8, 0x16), (8, 0x18), (0x20, 0x0D), (0x20, 0x0E)), EXPECTED, strict=True
                    )
                )
                + element
            )
        header = scan_header(data, syntax)
        assert header is not None and uids(header) == EXPECTED


def test_the_same_in_a_sequence_is_walked_as_a_data_set() -> None:
    """An item of undefined length inside an undefined-length UN/SQ holds a data set; inside
    encapsulated pixel data (OB/OW) it cannot (fragments have lengths)."""
    sequence = _sequence(_undefined_item(BODY))
    assert (
        scan_header(_minimal() + sequence.replace(b"SQ", b"UN", 1), ImplicitVRLittleEndian) is None
    )
    assert scan_header(_minimal() + sequence, ExplicitVRLittleEndian) is not None


def test_deep_nesting_is_left_to_pydicom_not_an_error() -> None:
    depth = 5000
    head = struct.pack("<HH", 0x0008, 0x1140) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    tail = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    data = _minimal() + (head + item) * depth + tail * depth
    assert scan_header(data, ExplicitVRLittleEndian) is None


@pytest.mark.parametrize(
    "syntax", [ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, "1.2.840.10008.1.2.4.95"]
)
def test_big_endian_and_deflated_data_sets_are_read_by_pydicom(syntax: str) -> None:
    assert scan_header(_minimal(), syntax) is None


def test_an_empty_data_set_is_left_to_pydicom() -> None:
    assert scan_header(b"", ExplicitVRLittleEndian) is None
    assert scan_header(b"", ImplicitVRLittleEndian) is None


def test_implicit_vr_elements_are_read_by_their_length() -> None:
    """In implicit VR there is no VR: a UID is taken by its tag, any length is a length."""
    implicit = b"".join(
        struct.pack("<HHI", 0x0008 if i < 2 else 0x0020, tag, len(_uid_value(uid)))
        + _uid_value(uid)
        for i, (tag, uid) in enumerate(zip((0x0016, 0x0018, 0x000D, 0x000E), EXPECTED, strict=True))
    )
    header = scan_header(implicit, ImplicitVRLittleEndian)
    assert header is not None and uids(header) == EXPECTED
    assert header == slow(implicit, ImplicitVRLittleEndian)
    assert scan_header(implicit, ExplicitVRLittleEndian) is None  # read as explicit: no VRs


def test_pydicom_s_test_files_are_scanned_as_pydicom_reads_them() -> None:
    scanned = 0
    for path in bundled_files("*.dcm"):
        raw = path.read_bytes()
        try:
            offset = dataset_offset(raw[: 1 << 20])
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                syntax = str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        except Exception:
            continue
        header = scan_header(raw[offset:], syntax)
        if header is None:
            continue
        scanned += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert header == read_header(io.BytesIO(raw), len(raw)), path.name
    assert scanned >= 40
