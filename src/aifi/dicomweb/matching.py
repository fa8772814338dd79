"""Attribute matching (PS3.18 §8.3.4, PS3.4 C.2.2.2). Pure code.

:func:`build_matcher` validates one match key of a Search transaction and says how it is
to be matched (a :class:`Matcher`; date/time pairs matched as one range are a
:class:`DateTimeMatcher`); anything malformed raises :class:`~aifi.errors.InvalidRequest`
with a reason for the ``Warning`` header. :func:`match_dataset` evaluates match keys against
stored DICOM JSON, for the keys the SQL index cannot answer (:mod:`aifi.hub.store.qido`
answers the others). The query they belong to is :mod:`aifi.dicomweb.qido_query`.

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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aifi import dicom_json
from aifi.dicomweb.attributes import fuzzy_pn
from aifi.dicomweb.query_attributes import UID_SYNTAX, AttributePath
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


class MatchKind(enum.Enum):
    UNIVERSAL = "universal"
    SINGLE = "single"
    WILDCARD = "wildcard"
    RANGE = "range"
    LIST = "list"


_NUMERIC_VRS = frozenset({"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD", "UV", "SV"})
_DATETIME_VRS = frozenset({"DA", "TM", "DT"})
_UNMATCHABLE_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})


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
        date = dicom_json.first(dataset, self.date.tag)
        if date is None:
            return False
        day = normalize_date(str(date))
        if day is None:
            return False
        time = dicom_json.first(dataset, self.time.tag)
        clock = normalize_time(str(time)) if time is not None else None
        if clock is None:
            # No time of day recorded: the date alone decides.
            return (self.low is None or day >= self.low[:8]) and (
                self.high is None or day <= self.high[:8]
            )
        stamp = day + clock
        return (self.low is None or stamp >= self.low) and (self.high is None or stamp <= self.high)


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
            if not (0 < len(uid) <= 64 and UID_SYNTAX.fullmatch(uid)):
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
        items = dicom_json.values(dataset, tag)
        if not items or not any(
            isinstance(item, Mapping) and match_dataset(group, item, depth=depth + 1)
            for item in items
        ):
            return False
    return all(c.matches_dataset(dataset) for c in combined)
