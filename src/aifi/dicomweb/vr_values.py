"""Value forms for matching (PS3.5 §6.2 value representations, PS3.4 C.2.2.2): DA, TM and
DT normalised to comparable strings (ranges, combined date-time), person names folded for
case-insensitive and fuzzy matching, and C-FIND wildcards (``*``, ``?``). Pure code.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from aifi.dicomweb.attributes import fuzzy_pn

_DA = re.compile(r"\d{8}")
_TM = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")
_DT = re.compile(r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?")


def normalize_time(value: str, *, upper: bool = False) -> str | None:
    """A TM value as ``HHMMSS.ffffff``: the start of the period its precision covers, or
    with ``upper`` its end (``"10"`` → ``"100000.000000"`` / ``"105959.999999"``).
    ``None`` if it is not a TM value (colons of the ACR-NEMA form are tolerated)."""
    m = _TM.fullmatch(value.strip().replace(":", ""))
    if m is None:
        return None
    hh, mm, ss, frac = m.groups()
    fill = "59" if upper else "00"
    if int(hh) > 24 or (mm and int(mm) > 59) or (ss and int(ss) > 60):
        return None
    digits = frac or ""
    fraction = digits + ("9" if upper else "0") * (6 - len(digits))
    return f"{hh}{mm or fill}{ss or fill}.{fraction}"


def normalize_date(value: str) -> str | None:
    value = value.strip()
    if not _DA.fullmatch(value):
        return None
    month, day = int(value[4:6]), int(value[6:8])
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return value


def normalize_datetime(value: str, *, upper: bool = False) -> str | None:
    """A DT value as ``YYYYMMDDHHMMSS.ffffff`` (start or end of its precision); the UTC
    offset, if any, is dropped."""
    m = _DT.fullmatch(value.strip())
    if m is None:
        return None
    year, month, day, hh, mm, ss, frac, _offset = m.groups()
    if (month and not 1 <= int(month) <= 12) or (day and not 1 <= int(day) <= 31):
        return None
    if upper:
        parts = [year, month or "12", day or "31", hh or "23", mm or "59", ss or "59"]
    else:
        parts = [year, month or "01", day or "01", hh or "00", mm or "00", ss or "00"]
    digits = frac or ""
    fraction = digits + ("9" if upper else "0") * (6 - len(digits))
    return "".join(parts) + "." + fraction


def combine_date_time(date: str | None, time: str | None) -> str | None:
    """The index form of a date and time pair: ``YYYYMMDD`` + ``HHMMSS.ffffff``, or only the
    date when the time is absent or malformed; ``None`` without a valid date."""
    if not date:
        return None
    day = normalize_date(date)
    if day is None:
        return None
    clock = normalize_time(time) if time else None
    return day + (clock or "")


def pn_text(value: Any) -> str:
    """A DICOM JSON PN value (``{"Alphabetic": …}``) as its ``A=I=P`` string form."""
    if isinstance(value, Mapping):
        groups = [str(value.get(g) or "") for g in ("Alphabetic", "Ideographic", "Phonetic")]
        return "=".join(groups).rstrip("=")
    return "" if value is None else str(value)


def pn_ci(value: str) -> str:
    """Case-insensitive form of a person name, for literal matching and the index:
    case-folded, empty trailing components and groups removed, outer spaces trimmed
    (``"Doe^John^^="`` → ``"doe^john"``)."""
    groups = [g.strip().rstrip("^").rstrip() for g in value.strip().casefold().split("=")]
    return "=".join(groups).rstrip("=")


@functools.lru_cache(maxsize=512)
def wildcard_regex(pattern: str) -> re.Pattern[str]:
    """A DICOM wildcard pattern (``*``, ``?``) as an anchored regular expression."""
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        else:
            out.append(re.escape(char))
    return re.compile("".join(out), re.DOTALL)


def has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def fuzzy_patterns(value: str) -> tuple[str, str]:
    """The two wildcard patterns that implement fuzzy matching against a folded name:
    the name starts with the value, or a word of it does."""
    folded = fuzzy_pn(value)
    return folded + "*", "* " + folded + "*"
