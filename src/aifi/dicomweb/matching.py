"""QIDO-RS query model and attribute matching (PS3.18 §8.3.4, §10.6; PS3.4 C.2.2.2). Pure code.

:func:`parse_query` turns the query parameters of a Search transaction (as
``request.query_params.multi_items()`` gives them: already percent-decoded, so
``PatientName=BRO%2A`` arrives as ``BRO*``) into a validated :class:`QidoQuery`; anything
malformed raises :class:`~aifi.errors.InvalidRequest` with a reason for the ``Warning``
header. :func:`match_dataset` evaluates match keys against stored DICOM JSON, for the keys
the SQL index cannot answer (:mod:`aifi.hub.store.qido` answers the others).

Matching (PS3.4 C.2.2.2, as PS3.18 §8.3.4.1 prescribes):

* **Universal** — an empty value (``PatientName=``) or a lone ``*``: matches everything and
  asks for the attribute to be returned.
* **Single value** — exact, case-sensitive, leading/trailing spaces insignificant.
  Person names (PN) are matched case-insensitively, which C.2.2.2.1 permits; a value without
  ``=`` also matches the alphabetic group of a multi-group name. Dates and times match the
  whole period their precision covers (``StudyTime=1015`` is 10:15:00–10:15:59.999999).
  Numbers compare numerically.
* **Wildcard** — ``*`` (any sequence) and ``?`` (one character) in string VRs
  (C.2.2.2.4); not allowed in DA, TM, DT, UI or numeric VRs.
* **Range** — ``a-b``, ``a-`` and ``-b`` for DA, TM and DT (C.2.2.2.5). When a query has
  both halves of a date/time pair (``StudyDate`` and ``StudyTime``, ``SeriesDate`` and
  ``SeriesTime``, …) and one of them is a range, they are matched as one combined
  date-time range (C.2.2.2.5.1): ``StudyDate=20240101-20240102&StudyTime=2200-0600``
  means 1 Jan 22:00 to 2 Jan 06:00. Timezone offsets in DT values are ignored.
* **UID list** — UIs separated by ``,`` or ``\\`` (PS3.18 §8.3.4.1, C.2.2.2.2). As an
  extension, CS values may also be listed (``ModalitiesInStudy=CT,MR``: any of them).
* **Sequence** — ``00400275.00401001`` or
  ``RequestAttributesSequence.RequestedProcedureID``: matches when one item matches every key
  given for that sequence (C.2.2.2.6).
* A multi-valued attribute matches when any of its values matches.

``fuzzymatching=true`` (PS3.18 §8.3.4.2) applies to PN keys only. Its semantics are this
hub's choice: both sides are folded for case and accents (``Müller`` = ``muller``) with
``^``/``=`` as spaces, and the value matches a name when the folded name, or any word of it,
*starts with* the value (``mul`` finds ``Müller^Ärne``, ``arne`` finds it too); ``*`` and
``?`` keep their meaning.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from aifi.dicomweb.attributes import SERIES_LEVEL_TAGS, STUDY_LEVEL_TAGS, fuzzy_pn
from aifi.dicomweb.store import DicomJson
from aifi.dicomweb.vr_values import (
    fuzzy_patterns,
    has_wildcard,
    normalize_date,
    normalize_datetime,
    normalize_time,
    pn_ci,
    pn_text,
    wildcard_regex,
)
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


class MatchKind(enum.Enum):
    UNIVERSAL = "universal"
    SINGLE = "single"
    WILDCARD = "wildcard"
    RANGE = "range"
    LIST = "list"


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

_STRING_VRS = frozenset({"AE", "AS", "CS", "LO", "LT", "SH", "ST", "UC", "UR", "UT", "PN"})
_NUMERIC_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
_DATETIME_VRS = frozenset({"DA", "TM", "DT"})
_UNMATCHABLE_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})

RESERVED_PARAMETERS = frozenset({"limit", "offset", "fuzzymatching", "includefield"})


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


# -- match keys ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Matcher:
    """One match key: an attribute (path), how to match, and the normalised operands."""

    path: AttributePath
    kind: MatchKind
    value: str
    """The value as received, spaces trimmed."""
    values: tuple[str, ...] = ()
    """SINGLE/WILDCARD: the one value (PN: its :func:`pn_ci` form); LIST: the members."""
    low: str | None = None
    """RANGE (and DA/TM/DT single values): normalised lower bound, ``None`` = open."""
    high: str | None = None
    fuzzy: bool = False

    @property
    def vr(self) -> str:
        return self.path.vr

    def matches_value(self, value: Any, vr: str | None = None) -> bool:
        """Does one value of a DICOM JSON element match?"""
        vr = vr or self.vr
        if self.kind is MatchKind.UNIVERSAL:
            return True
        if value is None:
            return False
        if vr == "PN":
            return self._match_pn(pn_text(value))
        if vr in _NUMERIC_VRS:
            try:
                return float(value) == float(self.values[0])
            except (TypeError, ValueError):
                return False
        text = str(value).strip()
        if self.kind is MatchKind.LIST:
            return text in self.values
        if self.low is not None or self.high is not None:
            return self._match_range(text, vr)
        if self.kind is MatchKind.WILDCARD:
            return wildcard_regex(self.values[0]).fullmatch(text) is not None
        if vr == "AT":
            return text.upper() == self.values[0].upper()
        return text == self.values[0]

    def _match_pn(self, name: str) -> bool:
        if self.fuzzy:
            folded = fuzzy_pn(name)
            return any(wildcard_regex(p).fullmatch(folded) for p in fuzzy_patterns(self.value))
        ci = pn_ci(name)
        wanted = self.values[0]
        if self.kind is MatchKind.WILDCARD:
            regex = wildcard_regex(wanted)
            return bool(regex.fullmatch(ci) or wildcard_regex(wanted + "=*").fullmatch(ci))
        return ci == wanted or ("=" not in wanted and ci.startswith(wanted + "="))

    def _match_range(self, text: str, vr: str) -> bool:
        if vr == "DA":
            stored: str | None = normalize_date(text)
        elif vr == "TM":
            stored = normalize_time(text)
        else:
            stored = normalize_datetime(text)
        if stored is None:
            return False
        return (self.low is None or stored >= self.low) and (
            self.high is None or stored <= self.high
        )

    def matches_element(self, element: Mapping[str, Any] | None) -> bool:
        """Does a DICOM JSON element (``{"vr": …, "Value": […]}``) match? Sequence paths
        are handled by :func:`match_dataset`."""
        if self.kind is MatchKind.UNIVERSAL:
            return True
        if not element:
            return False
        values = element.get("Value") or []
        vr = str(element.get("vr") or self.vr)
        if vr in ("UN", "OB") and self.vr not in ("UN", "OB"):
            vr = self.vr
        return any(self.matches_value(v, vr) for v in values)


@dataclass(frozen=True, slots=True)
class DateTimeMatcher:
    """Combined date-time range matching of a DA attribute and its TM partner
    (PS3.4 C.2.2.2.5.1). Bounds are ``YYYYMMDDHHMMSS.ffffff``; ``None`` = open."""

    date: AttributePath
    time: AttributePath
    low: str | None
    high: str | None

    def matches_dataset(self, dataset: Mapping[str, Any]) -> bool:
        date = _first_value(dataset.get(self.date.tag))
        if date is None:
            return False
        day = normalize_date(str(date))
        if day is None:
            return False
        time = _first_value(dataset.get(self.time.tag))
        clock = normalize_time(str(time)) if time is not None else None
        if clock is None:
            # No time of day recorded: the date alone decides.
            return (self.low is None or day >= self.low[:8]) and (
                self.high is None or day <= self.high[:8]
            )
        stamp = day + clock
        return (self.low is None or stamp >= self.low) and (self.high is None or stamp <= self.high)


def _first_value(element: Any) -> Any:
    if not isinstance(element, Mapping):
        return None
    values = element.get("Value") or []
    return values[0] if values else None


def _split_range(text: str) -> tuple[str, str] | None:
    if text.count("-") != 1:
        return None
    low, _, high = text.partition("-")
    return low.strip(), high.strip()


def _range_bounds(path: AttributePath, value: str) -> tuple[str | None, str | None, bool]:
    """Normalised (low, high, is_range) for a DA/TM/DT value; raise on malformed values."""
    vr = path.vr
    parts = _split_range(value)
    if (
        vr == "DT"
        and parts is not None
        and normalize_datetime(value) is not None
        and len(parts[0]) >= 10
        and len(parts[1]) == 4
    ):
        parts = None  # "…HHMM-0500" is one DT with a UTC offset, not a range
    if parts is None:
        low, high = _normalize(path, value, upper=False), _normalize(path, value, upper=True)
        if low is None or high is None:
            raise InvalidRequest(f"Malformed {vr} value for {path.name}: {value!r}")
        return low, high, False
    first, last = parts
    if not first and not last:
        raise InvalidRequest(f"Malformed range for {path.name}: {value!r}")
    low = _normalize(path, first, upper=False) if first else None
    high = _normalize(path, last, upper=True) if last else None
    if (first and low is None) or (last and high is None):
        raise InvalidRequest(f"Malformed {vr} range for {path.name}: {value!r}")
    return low, high, True  # reversed ranges are refused by parse_query


def _normalize(path: AttributePath, value: str, *, upper: bool) -> str | None:
    if path.vr == "DA":
        return normalize_date(value)
    if path.vr == "TM":
        return normalize_time(value, upper=upper)
    return normalize_datetime(value, upper=upper)


_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_CS = re.compile(r"[A-Z0-9 _]*")


def build_matcher(path: AttributePath, raw: str, *, fuzzy: bool = False) -> Matcher:
    """Validate one ``{attributeID}={value}`` pair and say how it is to be matched."""
    value = raw.strip()
    vr = path.vr
    if value in ("", "*"):
        return Matcher(path, MatchKind.UNIVERSAL, value)
    if vr == "SQ":
        raise InvalidRequest(
            f"{path.name} is a sequence: match on one of its attributes "
            f"({path.name}.<keyword>) or leave the value empty"
        )
    if vr in _UNMATCHABLE_VRS and not (int(path.leaf, 16) >> 16) % 2:
        raise InvalidRequest(f"{path.name} (VR {vr}) cannot be used as a matching key")
    if vr == "PN":
        kind = MatchKind.WILDCARD if has_wildcard(value) else MatchKind.SINGLE
        return Matcher(path, kind, value, (pn_ci(value),), fuzzy=fuzzy)
    if vr in _DATETIME_VRS:
        if has_wildcard(value):
            raise InvalidRequest(f"Wildcards cannot be used with {path.name} (VR {vr})")
        low, high, is_range = _range_bounds(path, value)
        kind = MatchKind.RANGE if is_range else MatchKind.SINGLE
        return Matcher(path, kind, value, (value,), low, high)
    if vr == "UI":
        members = tuple(m.strip() for m in re.split(r"[,\\]", value))
        for uid in members:
            if not (0 < len(uid) <= 64 and _UID.fullmatch(uid)):
                raise InvalidRequest(f"Not a valid UID for {path.name}: {uid!r}")
        if len(members) > 1:
            return Matcher(path, MatchKind.LIST, value, members)
        return Matcher(path, MatchKind.SINGLE, value, members)
    if vr in _NUMERIC_VRS:
        if has_wildcard(value):
            raise InvalidRequest(f"Wildcards cannot be used with {path.name} (VR {vr})")
        try:
            float(value)
        except ValueError as exc:
            raise InvalidRequest(f"Not a number for {path.name}: {value!r}") from exc
        return Matcher(path, MatchKind.SINGLE, value, (value,))
    if vr == "CS" and ("," in value or "\\" in value) and not has_wildcard(value):
        members = tuple(m.strip() for m in re.split(r"[,\\]", value) if m.strip())
        if not members:
            raise InvalidRequest(f"Empty value list for {path.name}: {value!r}")
        return Matcher(path, MatchKind.LIST, value, members)
    if has_wildcard(value):
        return Matcher(path, MatchKind.WILDCARD, value, (value,))
    return Matcher(path, MatchKind.SINGLE, value, (value,))


# -- the query ----------------------------------------------------------------------------


@dataclass(slots=True)
class QidoQuery:
    """A validated Search transaction (PS3.18 §10.6.1) at one level.

    ``study_instance_uid``/``series_instance_uid`` come from the target resource path;
    ``matchers`` are the other match keys (date/time pairs matched as one range are in
    ``combined`` instead); ``include`` lists the top-level tags to return besides the
    defaults (includefield values and match keys, PS3.18 §10.6.3.3).
    """

    level: QueryLevel
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    matchers: tuple[Matcher, ...] = ()
    combined: tuple[DateTimeMatcher, ...] = ()
    include: tuple[str, ...] = ()
    include_all: bool = False
    fuzzy: bool = False
    limit: int = 1000
    offset: int = 0
    notices: tuple[str, ...] = ()
    """Warnings to send with the response (``Warning: 299``), e.g. a clamped limit."""


@dataclass(slots=True)
class QueryResult:
    matches: list[DicomJson] = field(default_factory=list)
    remaining: int = 0
    """How many further matches exist beyond ``offset + len(matches)``."""
    warnings: list[str] = field(default_factory=list)


def _parse_uint(name: str, values: list[str]) -> int:
    if len(values) > 1:
        raise InvalidRequest(f"The {name} parameter is given more than once")
    text = values[0].strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidRequest(f"The {name} parameter must be an unsigned integer, not {text!r}")
    return int(text)


# DA attributes whose TM partner is named like them (PS3.4 C.2.2.2.5.1 pairs).
def _time_partner(date_tag: str) -> str | None:
    name = keyword(date_tag)
    if not name.endswith("Date"):
        return None
    number = tag_for_keyword(name[: -len("Date")] + "Time")
    if number is None or dictionary_vr(f"{number:08X}") != "TM":
        return None
    return f"{number:08X}"


def parse_query(
    params: Iterable[tuple[str, str]],
    level: QueryLevel,
    *,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
    default_limit: int = 1000,
    max_limit: int = 10000,
) -> QidoQuery:
    """Validate the query parameters of a Search transaction (PS3.18 §8.3.4, §10.6.1.2).

    ``params`` are decoded (name, value) pairs in request order. A ``limit`` above
    ``max_limit`` is lowered to it, with a notice (PS3.18 §8.3.4.4.1: the results returned
    are the minimum of limit and the origin server's maximum).
    """
    for label, uid in (("Study", study_instance_uid), ("Series", series_instance_uid)):
        if uid is not None and not (0 < len(uid) <= 64 and _UID.fullmatch(uid)):
            raise InvalidRequest(f"Not a valid {label} Instance UID in the path: {uid!r}")

    reserved: dict[str, list[str]] = {}
    keys: list[tuple[AttributePath, str]] = []
    seen: dict[tuple[str, ...], str] = {}
    for name, value in params:
        lowered = name.strip().lower()
        if lowered in RESERVED_PARAMETERS:
            reserved.setdefault(lowered, []).append(value)
            continue
        path = parse_path(name)
        if path.tags in seen:
            raise InvalidRequest(f"The matching key {path.name} is given more than once")
        seen[path.tags] = name
        keys.append((path, value))

    fuzzy = False
    if "fuzzymatching" in reserved:
        values = reserved["fuzzymatching"]
        if len(values) > 1:
            raise InvalidRequest("The fuzzymatching parameter is given more than once")
        flag = values[0].strip().lower()
        if flag not in ("true", "false"):
            raise InvalidRequest(f"fuzzymatching must be true or false, not {values[0]!r}")
        fuzzy = flag == "true"

    notices: list[str] = []
    limit = default_limit
    if "limit" in reserved:
        limit = _parse_uint("limit", reserved["limit"])
        if limit == 0:
            raise InvalidRequest("The limit parameter must be at least 1")
    if limit > max_limit:
        notices.append(
            f"The limit {limit} exceeds the maximum of {max_limit} results per response; "
            f"at most {max_limit} are returned"
        )
        limit = max_limit
    offset = _parse_uint("offset", reserved["offset"]) if "offset" in reserved else 0

    include: list[str] = []
    include_all = False
    for value in reserved.get("includefield", []):
        for item in value.split(","):
            item = item.strip()
            if not item:
                continue
            if item.lower() == "all":
                include_all = True
                continue
            tag = parse_path(item).tag
            if tag not in include:
                include.append(tag)

    matchers: list[Matcher] = []
    literal_only: list[str] = []
    for path, value in keys:
        if path.tag == STUDY_INSTANCE_UID and study_instance_uid is not None:
            raise InvalidRequest("StudyInstanceUID is already given in the path")
        if path.tag == SERIES_INSTANCE_UID and series_instance_uid is not None:
            raise InvalidRequest("SeriesInstanceUID is already given in the path")
        if path.level.depth > level.depth:
            raise InvalidRequest(
                f"{path.name} is a {path.level.label}-level attribute and cannot be "
                f"matched in a {level.label}-level search"
                + (" (use ModalitiesInStudy)" if path.tag == "00080060" else "")
            )
        matcher = build_matcher(path, value, fuzzy=fuzzy)
        if fuzzy and matcher.kind is not MatchKind.UNIVERSAL and path.vr != "PN":
            literal_only.append(path.name)
        matchers.append(matcher)
        if path.tag not in include:
            include.append(path.tag)
    if literal_only:
        notices.append(
            "Fuzzy matching applies to person names only; literal matching was performed "
            "for " + ", ".join(literal_only)
        )

    combined: list[DateTimeMatcher] = []
    by_tag = {m.path.tags: m for m in matchers}
    for m in list(matchers):
        if len(m.path.tags) != 1 or m.vr != "DA" or m.kind is MatchKind.UNIVERSAL:
            continue
        partner = _time_partner(m.path.tag)
        t = by_tag.get((partner,)) if partner else None
        if t is None or t.kind is MatchKind.UNIVERSAL:
            continue
        if m.kind is not MatchKind.RANGE and t.kind is not MatchKind.RANGE:
            continue  # two single values: matched separately, with the same result
        low = m.low + t.low if m.low is not None and t.low is not None else None
        high = m.high + t.high if m.high is not None and t.high is not None else None
        if m.low is not None and t.low is None:
            low = m.low + "000000.000000"
        if m.high is not None and t.high is None:
            high = m.high + "235959.999999"
        if low is not None and high is not None and low > high:
            raise InvalidRequest(
                f"The combined range of {m.path.name} and {t.path.name} ends before it starts"
            )
        combined.append(DateTimeMatcher(m.path, t.path, low, high))
        matchers.remove(m)
        matchers.remove(t)
    for m in matchers:
        if m.kind is MatchKind.RANGE and m.low and m.high and m.low > m.high:
            # PS3.4 C.2.2.2.5: <1> shall be less than or equal to <2>; a time range
            # crosses midnight only as part of a combined date-time range.
            raise InvalidRequest(f"Range for {m.path.name} ends before it starts: {m.value!r}")

    return QidoQuery(
        level=level,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        matchers=tuple(matchers),
        combined=tuple(combined),
        include=tuple(include),
        include_all=include_all,
        fuzzy=fuzzy,
        limit=limit,
        offset=offset,
        notices=tuple(notices),
    )


# -- matching stored data -----------------------------------------------------------------


def match_dataset(
    matchers: Sequence[Matcher],
    dataset: Mapping[str, Any],
    combined: Sequence[DateTimeMatcher] = (),
    *,
    depth: int = 0,
) -> bool:
    """Do all match keys match a DICOM JSON data set? Keys with a sequence path match when
    one item of the sequence matches all keys given under it (PS3.4 C.2.2.2.6)."""
    nested: dict[str, list[Matcher]] = {}
    for m in matchers:
        if m.kind is MatchKind.UNIVERSAL:
            continue
        tag = m.path.tags[depth]
        if len(m.path.tags) > depth + 1:
            nested.setdefault(tag, []).append(m)
        elif not m.matches_element(dataset.get(tag)):
            return False
    for tag, group in nested.items():
        element = dataset.get(tag)
        items = element.get("Value") if isinstance(element, Mapping) else None
        if not items or not any(
            isinstance(item, Mapping) and match_dataset(group, item, depth=depth + 1)
            for item in items
        ):
            return False
    return all(c.matches_dataset(dataset) for c in combined)
