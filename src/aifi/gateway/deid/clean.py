"""The "C" (clean) actions of PS3.15 Table E.1-1 on values: descriptor text, dates shifted by
the patient's offset (Retain Longitudinal Temporal Information with Modified Dates,
E.3.6), and Patient's Age computed from the birth date (PS3.5 Table 6.2-1, VR AS).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import date, timedelta

#: Dates and times in the usual spellings (2023-01-05, 05.01.2023, 1/5/23, 5 JAN 2023,
#: 12:30, 12:30:15.5) and every run of 3 or more digits (IDs, YYYYMMDD, HHMMSS ...).
_DATE_OR_NUMBER = re.compile(
    r"""
      \d{1,4}[-./]\d{1,2}[-./]\d{1,4}
    | \d{1,2}[-\s]?(?:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)[A-Z]*\.?(?:[-\s]?\d{2,4})?
    | (?:JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC)[A-Z]*\.?[-\s]?\d{1,2},?[-\s]\d{2,4}
    | \d{1,2}:\d{2}(?::\d{2}(?:\.\d+)?)?
    | \d{3,}
    """,
    re.VERBOSE | re.IGNORECASE,
)
#: A token: a run of letters and digits (what a name part or an identifier is compared with).
_TOKEN = re.compile(r"[^\W_]+")
_SPACES = re.compile(r"\s{2,}")
#: Punctuation left standing alone once the words around it are gone ("PID-0001" -> "-").
_LONE_PUNCTUATION = re.compile(r"(?<!\S)[^\w\s]+(?!\S)")
_NAME_SPLIT = re.compile(r"[\^=\s,]+")


def forbidden_tokens(names: Iterable[str], identifiers: Iterable[str]) -> frozenset[str]:
    """The case-folded tokens a cleaned descriptor must not contain: every part of every
    name (PN components split on ``^``, ``=`` and spaces, then into letter/digit runs) and
    every identifier, whole and in its letter/digit runs."""
    tokens: set[str] = set()
    for name in names:
        for part in _NAME_SPLIT.split(name):
            tokens.update(token.casefold() for token in _TOKEN.findall(part))
    for identifier in identifiers:
        identifier = identifier.strip()
        if identifier:
            tokens.add(identifier.casefold())
            tokens.update(token.casefold() for token in _TOKEN.findall(identifier))
    return frozenset(tokens)


def clean_text(text: str, forbidden: frozenset[str]) -> str:
    """A descriptor without dates, times, runs of 3+ digits and forbidden tokens (names,
    identifiers); the rest is kept ("CT THORAX", "T2", "3D"), spacing tidied."""
    text = _DATE_OR_NUMBER.sub(" ", text)
    text = _TOKEN.sub(lambda m: " " if m.group().casefold() in forbidden else m.group(), text)
    text = _LONE_PUNCTUATION.sub(" ", text)
    lines = [_SPACES.sub(" ", line).strip(" \t,;:/-_^") for line in text.splitlines()]
    return "\n".join(line for line in lines if line)


def parse_da(value: str) -> date | None:
    """A DA value (YYYYMMDD; also the ACR-NEMA YYYY.MM.DD) as a date, or None."""
    digits = value.strip().replace(".", "")
    if len(digits) != 8 or not digits.isdigit():
        return None
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        return None


def shift_da(value: str, days: int) -> str:
    """A DA value moved by ``days`` ("" when it is not a date: nothing unshifted leaks)."""
    parsed = parse_da(value)
    if parsed is None:
        return ""
    try:
        return (parsed + timedelta(days=days)).strftime("%Y%m%d")
    except OverflowError:
        return ""


def shift_dt(value: str, days: int) -> str:
    """A DT value (YYYY[MM[DD[HH...]]][&ZZXX]) with its date part moved by ``days``; the time
    and offset are kept. A year-only or year-month value is moved as its first day and
    written back at its own precision."""
    value = value.strip()
    head = value[:8]
    precision = len(head)
    if precision not in (4, 6, 8) or not head.isdigit():
        return ""
    shifted = shift_da(head + "0101"[precision - 4 :], days)
    if not shifted:
        return ""
    return shifted[:precision] + value[precision:]


def patient_age(birth: str, on: str) -> str | None:
    """Patient's Age (AS: nnnD, nnnW, nnnM or nnnY) on date ``on`` for birth date ``birth``,
    both DA; None when either is missing or the birth is after ``on``. Days under 4 weeks,
    then weeks under one completed month, completed months under one year, then completed
    years (at most 999)."""
    born, seen = parse_da(birth), parse_da(on)
    if born is None or seen is None or born > seen:
        return None
    days = (seen - born).days
    months = (seen.year - born.year) * 12 + seen.month - born.month - (seen.day < born.day)
    if days < 28:
        return f"{days:03d}D"
    if months < 1:
        return f"{days // 7:03d}W"
    if months < 12:
        return f"{months:03d}M"
    return f"{min(months // 12, 999):03d}Y"
