"""Checks of one received STOW-RS part (PS3.18 §10.5.3, Annex I; PS3.10 §7): is it a
PS3.10 file with File Meta, are its UIDs present, valid and consistent, is its SOP class a
storage class and its transfer syntax known, does its Study Instance UID match the request
path, is the data set complete — and the Failure Reason (0008,1197) when it is not.

Pure code over a staged file: no HTTP, no storage. The codes and the policy behind them are
listed in :mod:`aifi.dicomweb.stow` and in ``docs/conformance-statement.md``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom._uid_dict import UID_dictionary
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from aifi.dicomweb.dicomjson import dataset_to_metadata
from aifi.dicomweb.store import IncomingInstance

log = logging.getLogger(__name__)

MAX_DEFLATED_BYTES = 64 * 1024 * 1024
"""Deflated data sets are inflated in memory to be read: larger ones are refused (C122)."""

# Failure Reason (0008,1197) values, see the module docstring.
OUT_OF_RESOURCES = 0xA700
MISSING_ATTRIBUTE = 0xA900
CANNOT_UNDERSTAND = 0xC000
NOT_PART10 = 0xC001
META_MISMATCH = 0xC002
INVALID_UID = 0xC003
PART_NOT_DICOM = 0xC004
BODY_BROKEN = 0xC005
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
STUDY_UID_MISMATCH = 0xC409
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
SOP_CLASS_NOT_SUPPORTED = 0x0122

_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_NOT_FILE_ENCODINGS = frozenset(
    {
        "1.2.840.10008.1.2.6.1",  # RFC 2557 MIME encapsulation
        "1.2.840.10008.1.2.6.2",  # XML Encoding
        "1.2.840.10008.1.2.7.1",  # SMPTE ST 2110-20 / -30: network streams only
        "1.2.840.10008.1.2.7.2",
        "1.2.840.10008.1.2.7.3",
        "1.2.840.10008.1.20",  # Papyrus 3 Implicit VR Little Endian (retired, not PS3.10)
    }
)
_DEFLATED = frozenset({"1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.95"})
_UNDEFINED_LENGTH = 0xFFFFFFFF


def is_valid_uid(value: str) -> bool:
    """Digits and dots, at most 64 characters (PS3.5 §9.1; leading zeros tolerated)."""
    return 0 < len(value) <= 64 and _UID.fullmatch(value) is not None


def transfer_syntax_supported(uid: str) -> bool:
    entry = UID_dictionary.get(uid)
    return entry is not None and entry[1] == "Transfer Syntax" and uid not in _NOT_FILE_ENCODINGS


def sop_class_supported(uid: str) -> bool:
    """Storage SOP Classes and private/unknown ones; not known non-storage classes."""
    entry = UID_dictionary.get(uid)
    if entry is None:
        return True
    return entry[1] == "SOP Class" and "Storage" in entry[0] and "Commitment" not in entry[0]


# -- one part: outcome ----------------------------------------------------------------


@dataclass(slots=True)
class PartOutcome:
    """What became of one part of the request (in request order)."""

    index: int
    sop_class_uid: str | None = None
    sop_instance_uid: str | None = None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    failure: int | None = None
    warning: int | None = None
    reason: str = ""
    stored: bool = False

    def fail(self, code: int, reason: str) -> PartOutcome:
        self.failure, self.reason, self.stored = code, reason, False
        return self

    @property
    def referenceable(self) -> bool:
        """Can it be named in a SOP Instance Reference Macro (PS3.3 Table 10-11)?"""
        return bool(self.sop_class_uid and self.sop_instance_uid)


def examine_part(
    path: Path, size: int, sha256: str, index: int, expected_study: str | None
) -> tuple[PartOutcome, IncomingInstance | None]:
    """Read and check one staged part; the instance to store, or why it cannot be."""
    outcome = PartOutcome(index)
    try:
        with open(path, "rb") as fp:
            ds = dcmread(fp, defer_size=1024)
            end = fp.tell()
    except InvalidDicomError:
        _identify_bare_data_set(path, outcome)
        return outcome.fail(
            NOT_PART10,
            "not a DICOM PS3.10 file (no preamble, 'DICM' prefix and File Meta "
            "Information); STOW-RS application/dicom parts must be PS3.10 files",
        ), None
    except Exception as exc:  # pydicom raises many types for malformed input
        return outcome.fail(CANNOT_UNDERSTAND, f"cannot be parsed as DICOM: {exc}"), None

    uids = {keyword: _uid_value(ds, keyword) for keyword in _FIELD}
    for keyword, value in uids.items():  # only valid UIDs go into the response
        setattr(outcome, _FIELD[keyword], value if value and is_valid_uid(value) else None)
    meta = getattr(ds, "file_meta", None) or Dataset()
    transfer_syntax = _uid_value(meta, "TransferSyntaxUID")
    if not transfer_syntax:
        return outcome.fail(NOT_PART10, "File Meta Information has no Transfer Syntax UID"), None
    if not transfer_syntax_supported(transfer_syntax):
        return outcome.fail(
            TRANSFER_SYNTAX_NOT_SUPPORTED, f"transfer syntax {transfer_syntax} is not supported"
        ), None
    if transfer_syntax in _DEFLATED and size > MAX_DEFLATED_BYTES:
        return outcome.fail(
            TRANSFER_SYNTAX_NOT_SUPPORTED,
            f"deflated data sets over {MAX_DEFLATED_BYTES} bytes are not supported",
        ), None
    # A deflated data set is read from an inflated copy: offsets are not the file's.
    truncated = "" if transfer_syntax in _DEFLATED else _truncation(ds, end, size)
    if truncated:
        return outcome.fail(CANNOT_UNDERSTAND, truncated), None
    for keyword, value in uids.items():
        if not value:
            return outcome.fail(MISSING_ATTRIBUTE, f"{keyword} is missing or empty"), None
        if not is_valid_uid(value):
            return outcome.fail(INVALID_UID, f"{keyword} {value[:80]!r} is not a valid UID"), None
    for meta_keyword, keyword in (
        ("MediaStorageSOPClassUID", "SOPClassUID"),
        ("MediaStorageSOPInstanceUID", "SOPInstanceUID"),
    ):
        in_meta = _uid_value(meta, meta_keyword)
        if in_meta and in_meta != getattr(outcome, _FIELD[keyword]):
            return outcome.fail(
                META_MISMATCH,
                f"File Meta {meta_keyword} {in_meta} differs from the data set's {keyword}",
            ), None
    assert outcome.sop_class_uid is not None
    if not sop_class_supported(outcome.sop_class_uid):
        return outcome.fail(
            SOP_CLASS_NOT_SUPPORTED,
            f"SOP Class {outcome.sop_class_uid} is not a storage SOP Class",
        ), None
    if expected_study is not None and outcome.study_instance_uid != expected_study:
        return outcome.fail(
            STUDY_UID_MISMATCH,
            f"Study Instance UID {outcome.study_instance_uid} does not match the target "
            f"study {expected_study}",
        ), None
    try:
        metadata = dataset_to_metadata(ds)  # never loads Pixel Data
    except Exception as exc:  # a malformed element pydicom cannot convert
        return outcome.fail(CANNOT_UNDERSTAND, f"cannot be decoded: {exc}"), None
    instance = IncomingInstance(
        staged_path=path,
        size=size,
        sha256=sha256,
        transfer_syntax_uid=transfer_syntax,
        header=ds,
        metadata=metadata,
    )
    return outcome, instance


_FIELD = {
    "SOPClassUID": "sop_class_uid",
    "SOPInstanceUID": "sop_instance_uid",
    "StudyInstanceUID": "study_instance_uid",
    "SeriesInstanceUID": "series_instance_uid",
}


_UID_TAGS = {
    keyword: Tag(keyword)
    for keyword in (
        *_FIELD,
        "TransferSyntaxUID",
        "MediaStorageSOPClassUID",
        "MediaStorageSOPInstanceUID",
    )
}


def _uid_value(ds: Dataset, keyword: str) -> str | None:
    """A UID's text, stripped of padding; None when absent or empty.

    Read straight from the raw element's ASCII bytes when it is still raw (as read), which
    is what pydicom's conversion would give for a single value; otherwise, or for
    anything unusual (several values, non-ASCII, a deferred value), by pydicom."""
    tag = _UID_TAGS.get(keyword)
    raw = ds._dict.get(tag) if tag is not None else None
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) and b"\\" not in raw.value:
        try:
            return raw.value.decode("ascii").strip("\x00 ") or None
        except UnicodeDecodeError:
            pass
    try:
        value = ds.get(keyword)
    except Exception:  # a malformed raw element
        return None
    if value is None:
        return None
    text = str(value).strip("\x00 ")
    return text or None


def _truncation(ds: Dataset, end: int, size: int) -> str:
    """Why the data set does not end where the file does, or ''.

    pydicom stops quietly at end of file and seeks past it for deferred values, so a cut
    file still parses: compare where reading stopped, and where the last top-level
    element ends, with the file size."""
    if end > size:
        return f"truncated data set: an element extends to byte {end} of a {size}-byte file"
    tags = list(ds._dict)  # raw elements keep their file offsets
    if not tags:
        return "no data set after the File Meta Information"
    last = ds._dict[max(tags)]
    if isinstance(last, RawDataElement) and last.length != _UNDEFINED_LENGTH:
        last_end = last.value_tell + last.length
        if last_end != size:
            return (
                f"truncated data set: the last complete element ends at byte {last_end} "
                f"of a {size}-byte file"
            )
    return ""


def _identify_bare_data_set(path: Path, outcome: PartOutcome) -> None:
    """For a part without File Meta, find its UIDs if it is a bare data set (better
    report), without ever failing."""
    try:
        ds = dcmread(path, defer_size=1024, force=True, stop_before_pixels=True)
        sop_class = _uid_value(ds, "SOPClassUID")
        sop_instance = _uid_value(ds, "SOPInstanceUID")
    except Exception:  # garbage: nothing to identify
        return
    if sop_class and sop_instance and is_valid_uid(sop_class) and is_valid_uid(sop_instance):
        outcome.sop_class_uid, outcome.sop_instance_uid = sop_class, sop_instance
