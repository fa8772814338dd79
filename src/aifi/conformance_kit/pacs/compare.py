"""What the PACS did with an object: the instance retrieved back compared with the one sent,
and the attributes a search returned compared with the ones sent. Pure code: bytes and data
sets in, findings out.

A retrieved instance is judged (:func:`compare_retrieved`) in steps:

1. the Part 10 bytes are identical (WADO-RS returns a whole file, PS3.18 §10.4.1.1.1) —
   *identical*;
2. the encoded data set after the File Meta Information is identical — *same data set*: the
   File Meta Information is written by each application that writes the file (PS3.10 §7.1)
   and is not sent over DIMSE at all (PS3.7 §9.3.1.1), so a PACS's own is no finding;
3. otherwise both data sets are read and compared element by element, into sequences:
   elements the PACS *lost* (or whose value it changed outside the patient and study
   identification) are lost content — *lost*; a changed Transfer Syntax (PS3.5 §10, with the
   pixels compared decoded), added elements, and patient/study attributes the PACS coerced
   (PS3.4 B.4.1.3: a Storage SCP may coerce them and says so with status 0xB000) are
   *changed*.

Group length elements (gggg,0000), retired since PS3.5 §7.2 allows them to be dropped, are
not compared.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import FileMetaDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pynetdicom.dsutils import decode

COERCIBLE = frozenset(
    {
        "PatientName",
        "PatientID",
        "IssuerOfPatientID",
        "IssuerOfPatientIDQualifiersSequence",
        "OtherPatientIDsSequence",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "IssuerOfAccessionNumberSequence",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "InstitutionName",
        "SpecificCharacterSet",
    }
)
"""Patient and study identification a PACS may reconcile with its own records (PS3.4
B.4.1.3 coercion): a change there is a warning, elsewhere lost content."""

_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
"""Explicit VRs with a reserved field and a 4-byte length (PS3.5 §7.1.2)."""

PIXEL_DATA = 0x7FE00010


class Fidelity(StrEnum):
    IDENTICAL = "identical"
    SAME_DATA_SET = "same data set"
    CHANGED = "changed"
    LOST = "lost"


@dataclass(frozen=True)
class Retrieved:
    """An instance as a retrieve service returned it: the encoded data set, its Transfer
    Syntax and, where the service returns a file (WADO-RS), the whole Part 10 bytes."""

    dataset_bytes: bytes
    transfer_syntax: str
    part10: bytes | None = None

    @classmethod
    def from_part10(cls, data: bytes) -> Retrieved:
        """Split a Part 10 file; :class:`ValueError` when it is not one."""
        offset = dataset_offset(data)
        meta = dcmread(io.BytesIO(data[:offset]), stop_before_pixels=True).file_meta
        syntax = str(meta.get("TransferSyntaxUID", ""))
        if not syntax:
            raise ValueError("the File Meta Information has no Transfer Syntax UID")
        return cls(dataset_bytes=data[offset:], transfer_syntax=syntax, part10=data)

    def dataset(self) -> Dataset:
        """The data set read from :attr:`dataset_bytes` (with its Transfer Syntax as the
        File Meta, so pixels can be decoded)."""
        if self.part10 is not None:
            return dcmread(io.BytesIO(self.part10))
        syntax = UID(self.transfer_syntax)
        ds = decode(
            io.BytesIO(self.dataset_bytes),
            syntax.is_implicit_VR,
            syntax.is_little_endian,
            syntax.is_deflated,
        )
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
        return ds


def dataset_offset(data: bytes) -> int:
    """Where the data set starts in a Part 10 file: after the 128-byte preamble, ``DICM``
    and the File Meta Information elements (group 0002, Explicit VR Little Endian,
    PS3.10 §7.1), read element by element (their group length is not trusted)."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise ValueError("not a DICOM Part 10 file (no 'DICM' after the preamble, PS3.10 §7.1)")
    offset = 132
    while offset + 8 <= len(data) and int.from_bytes(data[offset : offset + 2], "little") == 2:
        if data[offset + 4 : offset + 6] in _LONG_LENGTH_VRS:
            offset += 12 + int.from_bytes(data[offset + 8 : offset + 12], "little")
        else:
            offset += 8 + int.from_bytes(data[offset + 6 : offset + 8], "little")
    if offset > len(data):
        raise ValueError("the File Meta Information runs past the end of the file")
    return offset


@dataclass
class Differences:
    """Element paths (``ContentSequence[0].TextValue``) by what happened to them."""

    lost: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def coerced(self) -> list[str]:
        return [path for path in self.changed if _top(path) in COERCIBLE]

    @property
    def content_changed(self) -> list[str]:
        return [path for path in self.changed if _top(path) not in COERCIBLE]

    def __bool__(self) -> bool:
        return bool(self.lost or self.added or self.changed)


def _top(path: str) -> str:
    return path.split(".", 1)[0].split("[", 1)[0]


def _name(tag: BaseTag) -> str:
    return keyword_for_tag(tag) or f"({tag.group:04X},{tag.element:04X})"


def _same(a: DataElement, b: DataElement) -> bool:
    if a.value == b.value:
        return True
    # Implicit VR cannot say OB from OW, nor keep a value's padding: compare as text too
    return str(a.value).rstrip(" \x00") == str(b.value).rstrip(" \x00")


def diff_datasets(
    sent: Dataset, got: Dataset, *, skip: Iterable[int] = (), prefix: str = ""
) -> Differences:
    """Every element that differs between ``sent`` and ``got``, into sequence items."""
    out = Differences()
    _diff(sent, got, prefix, out, frozenset(int(tag) for tag in skip))
    return out


def _diff(sent: Dataset, got: Dataset, prefix: str, out: Differences, skip: frozenset[int]) -> None:
    for tag in sorted(set(sent.keys()) | set(got.keys())):
        if tag.element == 0 or tag.group == 2 or int(tag) in skip:
            continue
        path = prefix + _name(tag)
        if tag not in got:
            out.lost.append(path)
        elif tag not in sent:
            out.added.append(path)
        else:
            a, b = sent[tag], got[tag]
            if a.VR == "SQ" and b.VR == "SQ":
                _diff_items(a.value, b.value, path, out, skip)
            elif not _same(a, b):
                out.changed.append(path)


def _diff_items(
    sent: Sequence[Dataset],
    got: Sequence[Dataset],
    path: str,
    out: Differences,
    skip: frozenset[int],
) -> None:
    for index, item in enumerate(sent):
        if index >= len(got):
            out.lost.append(f"{path}[{index}]")
        else:
            _diff(item, got[index], f"{path}[{index}].", out, skip)
    out.added.extend(f"{path}[{index}]" for index in range(len(sent), len(got)))


def _pixels_equal(sent: Dataset, got: Dataset) -> bool | None:
    """Decoded pixels equal? ``None`` when either cannot be decoded here."""
    try:
        return bool(np.array_equal(sent.pixel_array, got.pixel_array))
    except Exception:
        return None


@dataclass(frozen=True)
class Comparison:
    fidelity: Fidelity
    message: str
    evidence: dict[str, Any]


def compare_retrieved(sent_part10: bytes, sent: Dataset, got: Retrieved) -> Comparison:
    """Judge ``got`` against what was sent (the module docstring says how)."""
    sent_syntax = str(sent.file_meta.TransferSyntaxUID)
    sent_data_set = sent_part10[dataset_offset(sent_part10) :]
    evidence: dict[str, Any] = {
        "part10_bytes_sent": len(sent_part10),
        "part10_bytes_retrieved": len(got.part10) if got.part10 is not None else None,
        "data_set_bytes_sent": len(sent_data_set),
        "data_set_bytes_retrieved": len(got.dataset_bytes),
        "transfer_syntax_sent": sent_syntax,
        "transfer_syntax_retrieved": got.transfer_syntax,
    }
    if got.part10 is not None and got.part10 == sent_part10:
        return Comparison(Fidelity.IDENTICAL, "byte-identical Part 10 file", evidence)
    if got.part10 is not None:
        evidence["file_meta_changed"] = _meta_changes(sent, got.part10)
    if got.dataset_bytes == sent_data_set:
        return Comparison(
            Fidelity.SAME_DATA_SET,
            "byte-identical data set (the File Meta Information is the PACS's own, PS3.10 §7.1)",
            evidence,
        )
    return _judge(sent, got.dataset(), sent_syntax, got.transfer_syntax, evidence)


def _meta_changes(sent: Dataset, part10: bytes) -> list[str]:
    try:
        meta = dcmread(io.BytesIO(part10[: dataset_offset(part10)]), stop_before_pixels=True)
    except Exception:
        return ["(unreadable)"]
    return sorted({_top(path) for path in _meta_diff(sent.file_meta, meta.file_meta)})


def _meta_diff(sent: Dataset, got: Dataset) -> list[str]:
    names = []
    for tag in sorted(set(sent.keys()) | set(got.keys())):
        if tag.element == 0:
            continue
        if tag not in sent or tag not in got or not _same(sent[tag], got[tag]):
            names.append(_name(tag))
    return names


def _judge(
    sent: Dataset, got: Dataset, sent_syntax: str, got_syntax: str, evidence: dict[str, Any]
) -> Comparison:
    syntax_changed = UID(sent_syntax) != UID(got_syntax)
    skip = (PIXEL_DATA,) if syntax_changed and PIXEL_DATA in sent else ()
    differences = diff_datasets(sent, got, skip=skip)
    notes: list[str] = []
    if skip:
        equal = _pixels_equal(sent, got)
        if equal is False:
            differences.changed.append("PixelData")
        elif equal is None:
            notes.append("pixel data not compared (cannot decode it here)")
    evidence.update(
        {
            "lost": differences.lost,
            "changed": differences.content_changed,
            "coerced": differences.coerced,
            "added": differences.added,
        }
    )
    if syntax_changed:
        notes.insert(
            0,
            f"Transfer Syntax changed from {_syntax_name(sent_syntax)} to "
            f"{_syntax_name(got_syntax)}",
        )
    if differences.lost or differences.content_changed:
        parts = []
        if differences.lost:
            parts.append(f"lost {_listed(differences.lost)}")
        if differences.content_changed:
            parts.append(f"changed {_listed(differences.content_changed)}")
        message = "content lost: " + "; ".join(parts + notes)
        return Comparison(Fidelity.LOST, message, evidence)
    if differences.coerced:
        notes.append(f"coerced {_listed(differences.coerced)}")
    if differences.added:
        notes.append(f"added {_listed(differences.added)}")
    if not notes:
        notes.append("same elements and values, encoded differently")
    return Comparison(Fidelity.CHANGED, "not byte-identical: " + "; ".join(notes), evidence)


def _syntax_name(uid: str) -> str:
    name = UID(uid).name
    return f"{name} ({uid})" if name != uid else uid


def _listed(paths: Sequence[str], most: int = 8) -> str:
    shown = ", ".join(paths[:most])
    return shown + (f" and {len(paths) - most} more" if len(paths) > most else "")


# --- attributes a search returned ---------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(_text(item) for item in value)
    return str(value).strip(" \x00")


@dataclass(frozen=True)
class AttributeCheck:
    """Key attributes of one found object against the ones sent."""

    changed: dict[str, dict[str, str]]
    """keyword -> {"sent": ..., "found": ...}"""
    not_returned: list[str]
    matched: list[str]


def check_attributes(sent: Dataset, found: Dataset, keywords: Iterable[str]) -> AttributeCheck:
    """Compare ``keywords`` present in ``sent`` with ``found`` (a search result). An
    attribute the search left out or returned empty is *not returned* (a search returns
    what it indexes, PS3.18 §10.6.3.3), a different value *changed*."""
    changed: dict[str, dict[str, str]] = {}
    missing: list[str] = []
    matched: list[str] = []
    for keyword in keywords:
        expected = _text(sent.get(keyword))
        if not expected:
            continue
        actual = _text(found.get(keyword))
        if not actual:
            missing.append(keyword)
        elif actual != expected and not _same_number(actual, expected):
            changed[keyword] = {"sent": expected, "found": actual}
        else:
            matched.append(keyword)
    return AttributeCheck(changed=changed, not_returned=missing, matched=matched)


def _same_number(a: str, b: str) -> bool:
    try:
        return float(a) == float(b)
    except ValueError:
        return False
