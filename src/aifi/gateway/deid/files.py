"""Part 10 files in and out of the pseudonymiser and the re-identifier (PS3.10 §7.1): a file
(or a bare data set, as some PACS export them) read without decoding pixel data, and written
back with File Meta Information that follows the (changed) data set.
"""

from __future__ import annotations

import io
import struct

from pydicom import Dataset, config, dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from aifi.errors import InvalidRequest


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


def write_part10(ds: Dataset) -> bytes:
    """The data set as a Part 10 file (its file meta information as set)."""
    buffer = io.BytesIO()
    try:
        ds.save_as(buffer, enforce_file_format=True)
    except (TypeError, ValueError, OverflowError, struct.error) as exc:
        # A malformed instance pydicom read leniently but cannot encode again.
        raise InvalidRequest(f"the instance cannot be encoded: {exc}") from exc
    return buffer.getvalue()
