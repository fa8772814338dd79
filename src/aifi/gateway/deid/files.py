"""Part 10 files in and out of the pseudonymiser and the re-identifier (PS3.10 §7.1): a file
(or a bare data set, as some PACS export them) read without decoding pixel data, and written
back with File Meta Information that follows the (changed) data set.

:func:`split_pixel_data` spares the pseudonymiser pydicom's reading and writing of the
pixel data (most of an image's bytes) where the file allows it: when the top-level Pixel
Data (7FE0,0010) is the data set's last element, in a little-endian, not deflated transfer
syntax, the header is read up to it and the element's bytes are carried over as they are —
the same file as reading and writing it whole would give. Anything else (elements after the
pixel data, float pixel data, deflate, big endian) is read whole.
"""

from __future__ import annotations

import io
import struct

from pydicom import Dataset, config, dcmread
from pydicom import __version_info__ as pydicom_version
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from aifi.errors import InvalidRequest
from aifi.gateway.ingest.part10 import encode_file_meta


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value)


def rebuild_file_meta(ds: Dataset) -> None:
    """New File Meta Information (PS3.10 §7.1): the SOP Class/Instance UIDs of the data set,
    the transfer syntax it was read in, this implementation; no Source AE Title, no
    preamble content."""
    old = getattr(ds, "file_meta", None)
    transfer_syntax = (
        old.TransferSyntaxUID if old is not None and "TransferSyntaxUID" in old else None
    )
    if transfer_syntax is None:  # read without Part 10 header: the encoding it was read in
        implicit, little = ds.original_encoding
        if implicit:
            transfer_syntax = ImplicitVRLittleEndian
        elif little is False:
            transfer_syntax = ExplicitVRBigEndian
    wanted = {
        0x00020001: ("OB", b"\x00\x01"),
        0x00020002: ("UI", _text(ds, "SOPClassUID")),
        0x00020003: ("UI", _text(ds, "SOPInstanceUID")),
        0x00020010: ("UI", transfer_syntax or ExplicitVRLittleEndian),
        0x00020012: ("UI", PYDICOM_IMPLEMENTATION_UID),
    }
    # The existing FileMetaDataset is emptied and refilled (creating one costs more).
    meta = old if isinstance(old, FileMetaDataset) else FileMetaDataset()
    for old_tag in list(meta.keys()):
        del meta[old_tag]
    for number, (vr, value) in wanted.items():
        meta[number] = DataElement(number, vr, value, validation_mode=config.IGNORE)
    if meta is not old:
        ds.file_meta = meta
    ds.preamble = None


def read_part10(data: bytes) -> Dataset:
    """A Part 10 file (or a bare data set with a DICM-less preamble) as a data set; bytes
    pydicom cannot read are an :class:`InvalidRequest`."""
    try:
        # force: also a data set without Part 10 header (as some PACS export them); then
        # insist on what every instance has.
        ds = dcmread(io.BytesIO(data), force=True)
        if not _text(ds, "SOPInstanceUID") or not _text(ds, "SOPClassUID"):
            raise InvalidRequest("not a readable DICOM instance: no SOP Class/Instance UID")
    except (InvalidDicomError, EOFError, ValueError, KeyError, AttributeError, OSError) as exc:
        raise InvalidRequest(f"not a readable DICOM instance: {exc}") from exc
    return ds


_IMPLEMENTATION_VERSION = f"PYDICOM {'.'.join(pydicom_version)}"
_REBUILT_META = frozenset({0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012})
"""The File Meta Information :func:`rebuild_file_meta` leaves (its group length aside)."""


def write_part10(ds: Dataset, tail: bytes | memoryview = b"") -> bytes:
    """The data set as a Part 10 file (its file meta information as set), followed by
    ``tail`` (already encoded elements after the data set's last: the pixel data
    :func:`split_pixel_data` set aside).

    When the file meta is :func:`rebuild_file_meta`'s and the transfer syntax a standard
    one that is not deflated, its five elements are encoded here and the data set by
    pydicom's ``write_dataset``: the bytes ``save_as(enforce_file_format=True)`` writes,
    without its deep copy and rewriting of the file meta (half of the pseudonymiser's CPU
    per CT image). Anything else is written by ``save_as``."""
    try:
        head = _rebuilt_meta(ds)
        buffer = DicomBytesIO()
        if head is None:
            ds.save_as(buffer, enforce_file_format=True)
        else:
            meta_bytes, syntax = head
            buffer.is_implicit_VR = syntax.is_implicit_VR
            buffer.is_little_endian = syntax.is_little_endian
            buffer.write(meta_bytes)
            if "PixelData" in ds:  # PS3.5 A.4: as dcmwrite sets it
                ds["PixelData"].is_undefined_length = syntax.is_compressed
            write_dataset(buffer, ds)
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        # A malformed instance pydicom read leniently but cannot encode again.
        raise InvalidRequest(f"the instance cannot be encoded: {exc}") from exc
    if tail:
        buffer.write(tail)
    return buffer.getvalue()


def _rebuilt_meta(ds: Dataset) -> tuple[bytes, UID] | None:
    """Preamble, ``DICM`` and the encoded File Meta Information of a data set whose file
    meta :func:`rebuild_file_meta` made, with its transfer syntax; None for any other."""
    meta = getattr(ds, "file_meta", None)
    if not isinstance(meta, FileMetaDataset) or set(meta.keys()) - {0x00020000} != _REBUILT_META:
        return None
    syntax = UID(_text(meta, "TransferSyntaxUID"))
    if (
        not syntax.is_transfer_syntax
        or syntax.is_private
        or syntax.is_deflated
        or not syntax.is_little_endian
        or ds.preamble is not None
        or meta.FileMetaInformationVersion != b"\x00\x01"
    ):
        return None
    sop_class, sop_instance = _text(ds, "SOPClassUID"), _text(ds, "SOPInstanceUID")
    if (sop_class, sop_instance) != (
        _text(meta, "MediaStorageSOPClassUID"),
        _text(meta, "MediaStorageSOPInstanceUID"),
    ):
        return None
    meta_bytes = encode_file_meta(
        sop_class,
        sop_instance,
        str(syntax),
        implementation_class_uid=_text(meta, "ImplementationClassUID"),
        implementation_version=_IMPLEMENTATION_VERSION,  # as validate_file_meta adds it
    )
    return b"\x00" * 128 + b"DICM" + meta_bytes, syntax


_PIXEL_DATA = 0x7FE00010
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OW", b"UN"}
"""The VRs Pixel Data may have in explicit VR (PS3.5 §8.2); all have a 4-byte length."""
_NOT_SPLIT = {DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian}


def _pixel_element_end(tail: bytes | memoryview, implicit: bool) -> int | None:
    """Where the Pixel Data element at the start of ``tail`` ends (little endian), or None
    when ``tail`` does not start with one that pydicom would write back as it is."""
    if len(tail) < 12:
        return None
    group, element = struct.unpack_from("<HH", tail, 0)
    if (group << 16 | element) != _PIXEL_DATA:
        return None
    if implicit:
        (length,) = struct.unpack_from("<L", tail, 4)
        header = 8
    else:
        if bytes(tail[4:6]) not in _LONG_VRS:
            return None
        (length,) = struct.unpack_from("<L", tail, 8)
        header = 12
    if length != _UNDEFINED:
        return header + int(length)
    position = header  # encapsulated (PS3.5 §A.4): items up to the sequence delimiter
    while position + 8 <= len(tail):
        group, element, item_length = struct.unpack_from("<HHL", tail, position)
        tag = group << 16 | element
        if tag == _SEQUENCE_DELIMITER:
            return position + 8
        if tag != _ITEM or item_length == _UNDEFINED:
            return None
        position += 8 + item_length
    return None


def split_pixel_data(data: bytes) -> tuple[Dataset, memoryview] | None:
    """The header of a Part 10 file (read as :func:`read_part10` reads a file, up to the
    top-level Pixel Data) and the Pixel Data element's bytes, when that element is the file's
    last and the transfer syntax lets it be copied (see the module docstring); else None
    (read the file whole)."""
    stream = io.BytesIO(data)
    try:
        ds = dcmread(stream, force=True, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, ValueError, KeyError, AttributeError, OSError):
        return None  # read whole, which reports what is wrong
    if not _text(ds, "SOPInstanceUID") or not _text(ds, "SOPClassUID"):
        return None
    meta = getattr(ds, "file_meta", None)
    transfer_syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    implicit, little = ds.original_encoding
    if transfer_syntax is None or transfer_syntax in _NOT_SPLIT or little is not True:
        return None
    offset = stream.tell()
    tail = memoryview(data)[offset:]
    if not tail:
        return ds, tail  # no pixel data at all
    if _pixel_element_end(tail, bool(implicit)) != len(tail):
        return None
    return ds, tail
