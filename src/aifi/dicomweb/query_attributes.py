"""The attributes a QIDO-RS query names (PS3.18 §8.3.4.1, §10.6.1.2; PS3.4 C.6). Pure code.

Their query level (:func:`attribute_level`, after this hub's level sets of
:mod:`aifi.dicomweb.attributes`), their VR and keyword from the data dictionary (PS3.6), the
tags of the attributes a search computes or always returns, and attribute paths into
sequences (``00400275.00401001``, ``RequestAttributesSequence.RequestedProcedureID``).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from aifi.dicomweb.attributes import SERIES_LEVEL_TAGS, STUDY_LEVEL_TAGS
from aifi.errors import InvalidRequest


class QueryLevel(enum.Enum):
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return _DEPTH[self]

    @property
    def label(self) -> str:
        return "instance" if self is QueryLevel.IMAGE else self.value.lower()


_DEPTH = {QueryLevel.STUDY: 0, QueryLevel.SERIES: 1, QueryLevel.IMAGE: 2}


# -- attributes ----------------------------------------------------------------------------

RETRIEVE_URL = "00081190"
INSTANCE_AVAILABILITY = "00080056"
SPECIFIC_CHARACTER_SET = "00080005"
TIMEZONE_OFFSET = "00080201"
STUDY_INSTANCE_UID = "0020000D"
SERIES_INSTANCE_UID = "0020000E"
SOP_INSTANCE_UID = "00080018"
MODALITIES_IN_STUDY = "00080061"
SOP_CLASSES_IN_STUDY = "00080062"
NUMBER_OF_STUDY_RELATED_SERIES = "00201206"
NUMBER_OF_STUDY_RELATED_INSTANCES = "00201208"
NUMBER_OF_SERIES_RELATED_INSTANCES = "00201209"

STUDY_COMPUTED = frozenset(
    {
        MODALITIES_IN_STUDY,
        SOP_CLASSES_IN_STUDY,
        NUMBER_OF_STUDY_RELATED_SERIES,
        NUMBER_OF_STUDY_RELATED_INSTANCES,
    }
)
"""Study attributes computed from the stored instances (PS3.4 C.6.1.1.3, C.6.2.1.2)."""
SERIES_COMPUTED = frozenset({NUMBER_OF_SERIES_RELATED_INSTANCES})
ANY_LEVEL = frozenset({RETRIEVE_URL, INSTANCE_AVAILABILITY})
"""Attributes every result carries, whatever its level."""

UID_SYNTAX = re.compile(r"[0-9]+(\.[0-9]+)*")
"""The syntax of a UID (PS3.5 §9.1), to be matched with ``fullmatch``."""


def attribute_level(tag: str) -> QueryLevel:
    """The query level an attribute belongs to (PS3.4 C.6; this hub's level sets).
    :data:`ANY_LEVEL` attributes count as study level, so every search may use them."""
    if tag in STUDY_LEVEL_TAGS or tag in STUDY_COMPUTED or tag in ANY_LEVEL:
        return QueryLevel.STUDY
    if tag in SERIES_LEVEL_TAGS or tag in SERIES_COMPUTED:
        return QueryLevel.SERIES
    return QueryLevel.IMAGE


def dictionary_vr(tag: str) -> str:
    """The VR PS3.6 gives ``tag`` (the first choice where it gives several); private and
    unknown tags get ``UN``."""
    number = int(tag, 16)
    if (number >> 16) % 2 == 1:
        return "UN"
    try:
        vr = str(dictionary_VR(number))
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def keyword(tag: str) -> str:
    """``"00100010"`` → ``"PatientName"``; the tag itself when it has no keyword."""
    try:
        return keyword_for_tag(int(tag, 16)) or tag
    except ValueError:
        return tag


_TAG = re.compile(r"[0-9A-Fa-f]{8}")


def parse_tag(name: str) -> str:
    """A keyword (``PatientID``) or a tag (``00100020``) → the upper-case 8-hex-digit tag.

    Raise :class:`InvalidRequest` for an unknown keyword or a public tag PS3.6 does not
    define. Private tags (odd group) are accepted.
    """
    if _TAG.fullmatch(name):
        tag = name.upper()
        number = int(tag, 16)
        if number & 0xFFFF == 0:
            raise InvalidRequest(f"Group length tags cannot be queried: {name}")
        if (number >> 16) % 2 == 0 and dictionary_vr(tag) == "UN":
            raise InvalidRequest(f"Unknown attribute tag: {name}")
        return tag
    found = tag_for_keyword(name)
    if found is None:
        raise InvalidRequest(f"Unknown attribute keyword: {name!r}")
    return f"{found:08X}"


@dataclass(frozen=True, slots=True)
class AttributePath:
    """A top-level attribute, or a path into sequences (``00400275.00401001``)."""

    tags: tuple[str, ...]

    @property
    def tag(self) -> str:
        """The top-level tag."""
        return self.tags[0]

    @property
    def leaf(self) -> str:
        return self.tags[-1]

    @property
    def vr(self) -> str:
        return dictionary_vr(self.leaf)

    @property
    def level(self) -> QueryLevel:
        return attribute_level(self.tag)

    @property
    def name(self) -> str:
        return ".".join(keyword(t) for t in self.tags)


def parse_path(text: str) -> AttributePath:
    """``"RequestAttributesSequence.RequestedProcedureID"`` or ``"00400275.00401001"``."""
    parts = text.strip().split(".")
    if not all(parts):
        raise InvalidRequest(f"Malformed attribute path: {text!r}")
    tags = tuple(parse_tag(p) for p in parts)
    for tag in tags[:-1]:
        if dictionary_vr(tag) not in ("SQ", "UN"):
            raise InvalidRequest(f"{keyword(tag)} in {text!r} is not a sequence")
    return AttributePath(tags)
