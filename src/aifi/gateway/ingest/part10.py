"""Reading and writing the Part 10 framing of what the gateway receives (PS3.10 §7.1): the
File Meta Information a C-STORE data set is stored with, where the data set starts, the few
header UIDs the gateway indexes (:func:`scan_header` for a C-STORE data set,
:func:`read_header` by pydicom for the rest), whether the data set is complete, and its
SHA-256 — without decoding anything (:mod:`aifi.gateway.ingest.pipeline` is the path that uses
them). Also the C-STORE response statuses (PS3.4 Table B.2-1; PS3.7 C.5) the receiving side
answers with, which are the STOW-RS Failure Reasons too where PS3.18 Table I.2-2 gives them the
same meaning.
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from aifi.dicomweb.instance_checks import is_valid_uid
from aifi.errors import AifiError

# C-STORE response statuses (PS3.4 Table B.2-1; PS3.7 C.5), also used as STOW-RS Failure
# Reasons where PS3.18 Table I.2-2 has the same meaning.
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
"""Refused: Out of Resources (PS3.4 B.2.3, A7xx): no space left on the store."""
DATA_SET_MISMATCH = 0xA900
"""Error: Data Set does not match SOP Class (A9xx): identifying UIDs missing, invalid, or
not those of the C-STORE request."""
CANNOT_UNDERSTAND = 0xC210
"""Error: Cannot understand (Cxxx): not parseable, or truncated."""
DUPLICATE_SOP_INSTANCE = 0x0111
"""A different data set with this SOP Instance UID is stored (PS3.7 C.5)."""
PROCESSING_FAILURE = 0x0110
"""Processing failure (PS3.7 C.5): the store or the database failed (logged)."""

PREAMBLE = b"\x00" * 128 + b"DICM"
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN",
                       b"UR", b"UT", b"UV"})  # fmt: skip
_UNDEFINED_LENGTH = 0xFFFFFFFF
_HEADER_TAGS = {
    "SOPClassUID": Tag(0x0008, 0x0016),
    "SOPInstanceUID": Tag(0x0008, 0x0018),
    "StudyInstanceUID": Tag(0x0020, 0x000D),
    "SeriesInstanceUID": Tag(0x0020, 0x000E),
}
_DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})
HASH_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class InstanceHeader:
    """The few attributes of a received instance the gateway indexes."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str


class Unreadable(AifiError):
    """The received bytes are not an instance the gateway can store."""

    def __init__(self, failure: int, reason: str) -> None:
        super().__init__(reason)
        self.failure = failure
        self.reason = reason


# -- File Meta Information ------------------------------------------------------------------

IMPLEMENTATION_CLASS_UID = str(PYNETDICOM_IMPLEMENTATION_UID)
"""The Implementation Class UID in the File Meta of a received C-STORE data set: that of
pynetdicom, which received it (as its own ``Event.encoded_dataset`` would write)."""
IMPLEMENTATION_VERSION = PYNETDICOM_IMPLEMENTATION_VERSION


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\x00" if vr in (b"UI", b"OB") else b" "
    head = (2).to_bytes(2, "little") + element.to_bytes(2, "little") + vr
    if vr == b"OB":
        return head + b"\x00\x00" + len(value).to_bytes(4, "little") + value
    return head + len(value).to_bytes(2, "little") + value


def encode_file_meta(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae: str = "",
    *,
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
    implementation_version: str = IMPLEMENTATION_VERSION,
) -> bytes:
    """The File Meta Information group (PS3.10 §7.1, explicit VR little endian, without the
    preamble), padded as pydicom pads it (UI with a NUL, text with a space); by default for
    a data set received with C-STORE (pynetdicom's implementation). Written by hand because
    the general encoder costs more than the rest of the C-STORE path's header work (and
    than the pseudonymiser's own work, :func:`aifi.gateway.deid.files.write_part10`)."""
    body = b"".join(
        (
            _meta_element(0x0001, b"OB", b"\x00\x01"),
            _meta_element(0x0002, b"UI", sop_class_uid.encode("ascii")),
            _meta_element(0x0003, b"UI", sop_instance_uid.encode("ascii")),
            _meta_element(0x0010, b"UI", transfer_syntax_uid.encode("ascii")),
            _meta_element(0x0012, b"UI", implementation_class_uid.encode("ascii")),
            _meta_element(0x0013, b"SH", implementation_version.encode("ascii")),
            _meta_element(0x0016, b"AE", source_ae.encode("ascii", "replace"))
            if source_ae
            else b"",
        )
    )
    return b"\x02\x00\x00\x00UL\x04\x00" + len(body).to_bytes(4, "little") + body


# -- reading the header ---------------------------------------------------------------------


def dataset_offset(head: bytes) -> int:
    """Where the data set starts in a Part 10 file: after the preamble, ``DICM`` and the
    File Meta Information group (PS3.10 §7.1, always explicit VR little endian).

    ``head`` must hold at least the whole File Meta group."""
    if head[128:132] != b"DICM":
        raise Unreadable(CANNOT_UNDERSTAND, "not a DICOM PS3.10 file (no 'DICM' prefix)")
    position = 132
    while position + 8 <= len(head):
        group = int.from_bytes(head[position : position + 2], "little")
        if group != 0x0002:
            return position
        vr = bytes(head[position + 4 : position + 6])
        if vr in _LONG_VRS:
            length = int.from_bytes(head[position + 8 : position + 12], "little")
            position += 12 + length
        else:
            length = int.from_bytes(head[position + 6 : position + 8], "little")
            position += 8 + length
    if position == len(head):
        return position
    raise Unreadable(CANNOT_UNDERSTAND, "the File Meta Information is truncated")


def _uid(ds: Dataset, keyword: str) -> str:
    raw = ds._dict.get(_HEADER_TAGS[keyword])
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        try:
            return raw.value.decode("ascii").strip("\x00 ")
        except UnicodeDecodeError:
            return ""
    value = ds.get(keyword)
    return "" if value is None else str(value).strip("\x00 ")


def read_header(fp: BinaryIO, size: int) -> InstanceHeader:
    """Read the indexed UIDs of the Part 10 file in ``fp`` (``size`` bytes) and check that
    the data set is complete: long values are skipped, not read, and nothing is decoded.

    Raises :class:`Unreadable` with the status to answer."""
    try:
        ds = dcmread(fp, defer_size=256)
        end = fp.tell()
    except InvalidDicomError as exc:
        raise Unreadable(CANNOT_UNDERSTAND, f"not a DICOM PS3.10 file: {exc}") from exc
    except Exception as exc:  # pydicom raises many types for malformed input
        raise Unreadable(CANNOT_UNDERSTAND, f"cannot be parsed as DICOM: {exc}") from exc
    meta = ds.file_meta
    transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "").strip("\x00 ")
    if not transfer_syntax:
        raise Unreadable(CANNOT_UNDERSTAND, "File Meta Information has no Transfer Syntax UID")
    if transfer_syntax not in _DEFLATED:  # a deflated data set was read from an inflated copy
        problem = _truncation(ds, end, size)
        if problem:
            raise Unreadable(CANNOT_UNDERSTAND, problem)
    uids = {keyword: _uid(ds, keyword) for keyword in _HEADER_TAGS}
    for keyword, value in uids.items():
        if not value:
            raise Unreadable(DATA_SET_MISMATCH, f"{keyword} is missing or empty")
        if not is_valid_uid(value):
            raise Unreadable(DATA_SET_MISMATCH, f"{keyword} {value[:80]!r} is not a valid UID")
    return InstanceHeader(
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_instance_uid=uids["StudyInstanceUID"],
        series_instance_uid=uids["SeriesInstanceUID"],
        transfer_syntax_uid=transfer_syntax,
    )


def _truncation(ds: Dataset, end: int, size: int) -> str:
    """Why the data set does not end where the bytes do, or ''. pydicom stops quietly at
    the end of the bytes and seeks past it for skipped values, so a cut data set still
    parses: compare where reading stopped, and where the last element ends, with the size."""
    if end > size:
        return f"truncated data set: an element extends to byte {end} of {size} bytes"
    if not ds._dict:
        return "no data set after the File Meta Information"
    last = ds._dict[max(ds._dict)]
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED_LENGTH:
        last_end = last.value_tell + last.length
        if last_end != size:
            return f"truncated data set: the last element ends at byte {last_end} of {size}"
    return ""


# -- the fast path: the header of a C-STORE data set without pydicom -------------------------

_IMPLICIT_LITTLE = "1.2.840.10008.1.2"
_NOT_SCANNED = frozenset({"1.2.840.10008.1.2.2", *_DEFLATED})
"""Big endian (retired) and the deflated syntaxes: read by pydicom (:func:`read_header`)."""
_SHORT_VRS = frozenset({b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS",
                        b"LO", b"LT", b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL",
                        b"US"})  # fmt: skip
_ITEMS_INSIDE = frozenset({b"SQ", b"UN", b"OB", b"OW"})
"""The explicit VRs an element of undefined length may have (PS3.5 §7.1.2, §7.5, A.4)."""
_ITEM = (0xFFFE, 0xE000)
_ITEM_END = (0xFFFE, 0xE00D)
_SEQUENCE_END = (0xFFFE, 0xE0DD)
_SCANNED_UIDS = {
    (0x0008, 0x0016): 0,  # SOP Class UID
    (0x0008, 0x0018): 1,  # SOP Instance UID
    (0x0020, 0x000D): 2,  # Study Instance UID
    (0x0020, 0x000E): 3,  # Series Instance UID
}
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class _Irregular(AifiError):
    """The scan cannot vouch for the data set: :func:`read_header` decides."""


def scan_header(dataset: bytes | memoryview, transfer_syntax_uid: str) -> InstanceHeader | None:
    """The header of a C-STORE data set (``dataset``: the bytes after the File Meta
    Information, little endian), found by walking its element framing (PS3.5 §7.1, §7.5):
    tags and lengths only, values never read except the four indexed UIDs.

    The answer is the one :func:`read_header` gives, at a fraction of the cost, when the
    data set is regular: every element's length inside the bytes, every sequence and item
    of undefined length delimited, the last element ending at the last byte, the four
    indexed UIDs present once at the top level as ``UI`` (explicit VR) and valid. For
    anything else — and for big endian and deflated data sets — it returns ``None`` and
    the caller asks :func:`read_header`, which refuses with a reason or accepts what only
    pydicom's leniency reads."""
    if transfer_syntax_uid in _NOT_SCANNED:
        return None
    implicit = transfer_syntax_uid == _IMPLICIT_LITTLE
    found: list[bytes | None] = [None, None, None, None]
    try:
        if _walk(dataset, 0, implicit, found) != len(dataset):
            return None
    except (_Irregular, struct.error, RecursionError):
        return None
    uids = []
    for raw in found:
        if raw is None:
            return None
        try:
            uid = raw.decode("ascii").strip("\x00 ")
        except UnicodeDecodeError:
            return None
        if not uid or not is_valid_uid(uid):
            return None
        uids.append(uid)
    return InstanceHeader(
        sop_class_uid=uids[0],
        sop_instance_uid=uids[1],
        study_instance_uid=uids[2],
        series_instance_uid=uids[3],
        transfer_syntax_uid=transfer_syntax_uid,
    )


def _walk(
    data: bytes | memoryview, pos: int, implicit: bool, found: list[bytes | None] | None
) -> int:
    """Skip the elements of a data set from ``pos``: to the end of ``data`` at the top level
    (``found`` given: the indexed UIDs are collected into it), or to the item delimiter of an
    item of undefined length (``found`` None). Returns the position after what was walked.

    Reading a tag or length past the end raises ``struct.error``, and a value running past
    it leaves the position beyond it — irregular either way (the top level must end exactly
    at the end, an item at its delimiter)."""
    end = len(data)
    while pos < end:
        tag = _TAG.unpack_from(data, pos)
        if tag[0] == 0xFFFE:
            if found is None and tag == _ITEM_END and _U32.unpack_from(data, pos + 4)[0] == 0:
                return pos + 8
            raise _Irregular
        if implicit:
            vr = b""
            length = _U32.unpack_from(data, pos + 4)[0]
            pos += 8
        else:
            vr = bytes(data[pos + 4 : pos + 6])
            if vr in _SHORT_VRS:
                length = _U16.unpack_from(data, pos + 6)[0]
                pos += 8
            elif vr in _LONG_VRS:
                length = _U32.unpack_from(data, pos + 8)[0]
                pos += 12
            else:
                raise _Irregular
        if length == _UNDEFINED_LENGTH:
            if not implicit and vr not in _ITEMS_INSIDE:
                raise _Irregular
            pos = _items(data, pos, implicit or vr == b"UN", fragments=vr in (b"OB", b"OW"))
            continue
        if found is not None and tag in _SCANNED_UIDS:
            index = _SCANNED_UIDS[tag]
            if found[index] is not None or not (implicit or vr == b"UI"):
                raise _Irregular
            found[index] = bytes(data[pos : pos + length])
        pos += length
    if found is None:  # an item of undefined length ran to the end: no delimiter
        raise _Irregular
    return pos


def _items(data: bytes | memoryview, pos: int, implicit: bool, *, fragments: bool) -> int:
    """Skip the items of a value of undefined length (a sequence, PS3.5 §7.5; or the
    fragments of encapsulated pixel data, A.4) through its sequence delimiter (reads past
    the end of the bytes raise ``struct.error``)."""
    while True:
        tag = _TAG.unpack_from(data, pos)
        length = _U32.unpack_from(data, pos + 4)[0]
        pos += 8
        if tag == _SEQUENCE_END:
            if length:
                raise _Irregular
            return pos
        if tag != _ITEM:
            raise _Irregular
        if length == _UNDEFINED_LENGTH:
            if fragments:
                raise _Irregular
            pos = _walk(data, pos, implicit, None)
        else:
            pos += length


def file_digest(fp: BinaryIO, offset: int) -> str:
    fp.seek(offset)
    digest = hashlib.sha256()
    while chunk := fp.read(HASH_CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


_DIGEST_IN_BACKGROUND = 1 << 16
"""Data sets at least this large are hashed in another thread while their file is written
and fsync'd (hashlib lets go of the interpreter lock while it hashes): on the C-STORE path
the SHA-256 of a CT image (0.3 ms) then costs no time of its own."""
_hashers: ThreadPoolExecutor | None = None
_hashers_lock = threading.Lock()


def _sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def start_digest(data: bytes | memoryview) -> Callable[[], str]:
    """The SHA-256 of ``data`` (hex), started now; call the result to wait for it.
    ``data`` must stay readable until then."""
    global _hashers
    if len(data) < _DIGEST_IN_BACKGROUND:
        value = _sha256(data)
        return lambda: value
    with _hashers_lock:
        if _hashers is None:
            _hashers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="aifi-ingest-sha256")
    return _hashers.submit(_sha256, data).result
