"""Checks that a request payload is a well-formed DICOM JSON data set (PS3.18 Annex F.2).

Used where clients send DICOM JSON to be stored as it is (UPS-RS workitems, their updates,
state changes and cancellation requests): what is stored must be what every later reader —
search, retrieve, the state machine, event reports — can rely on. Pure code.

Checked (F.2.2, F.2.3): keys are 8 hexadecimal digits; each element is an object with a
known ``vr``; at most one of ``Value``, ``BulkDataURI``, ``InlineBinary``; ``Value`` is an
array whose items have the JSON type of the VR — strings (or null) for the string VRs,
numbers for the binary numeric VRs (IS and DS also as numeric strings, tolerant reading),
Person Name objects with ``Alphabetic``/``Ideographic``/``Phonetic`` strings for PN,
data sets (checked the same way) for SQ.
"""

from __future__ import annotations

import re
from typing import Any

from pydicom.datadict import dictionary_description

_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
STRING_VRS = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
NUMBER_VRS = frozenset({"US", "UL", "SS", "SL", "FL", "FD", "UV", "SV"})
DECIMAL_STRING_VRS = frozenset({"IS", "DS"})
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
KNOWN_VRS = STRING_VRS | NUMBER_VRS | DECIMAL_STRING_VRS | BINARY_VRS | {"AT", "PN", "SQ"}
PN_GROUPS = frozenset({"Alphabetic", "Ideographic", "Phonetic"})
MAX_DEPTH = 16


def dicom_json_problems(dataset: Any, path: str = "", depth: int = 0) -> list[str]:
    """Why ``dataset`` is not a well-formed DICOM JSON data set; [] when it is."""
    if not isinstance(dataset, dict):
        return [f"{path or 'the payload'} is not a JSON object (a DICOM JSON data set)"]
    if depth > MAX_DEPTH:
        return [f"{path}: sequences nested deeper than {MAX_DEPTH} levels"]
    problems: list[str] = []
    for key, element in dataset.items():
        if not isinstance(key, str) or not _TAG.match(key):
            problems.append(f"{path}{key!r} is not a tag (8 hexadecimal digits, PS3.18 F.2.1.1)")
            continue
        where = path + _name(key)
        problems.extend(_element_problems(element, where, depth))
        if len(problems) >= 5:
            break
    return problems


def _element_problems(element: Any, where: str, depth: int) -> list[str]:
    if not isinstance(element, dict):
        return [f"{where}: an element must be a JSON object with a vr (PS3.18 F.2.2)"]
    vr = element.get("vr")
    if not isinstance(vr, str) or vr not in KNOWN_VRS:
        return [f"{where}: missing or unknown vr {vr!r}"]
    present = [k for k in ("Value", "BulkDataURI", "InlineBinary") if k in element]
    if len(present) > 1:
        return [f"{where}: only one of Value, BulkDataURI and InlineBinary may be given"]
    for key in ("BulkDataURI", "InlineBinary"):
        if key in element and not isinstance(element[key], str):
            return [f"{where}: {key} must be a string"]
    if "Value" not in element:
        return []
    values = element["Value"]
    if not isinstance(values, list):
        return [f"{where}: Value must be a JSON array (PS3.18 F.2.4)"]
    if vr in BINARY_VRS:
        return [f"{where}: {vr} data is sent as InlineBinary or BulkDataURI, not Value"]
    problems: list[str] = []
    for i, value in enumerate(values):
        item = f"{where}[{i}]"
        if vr == "SQ":
            problems.extend(dicom_json_problems(value, item + " > ", depth + 1))
        elif value is None:
            continue
        elif vr in STRING_VRS or vr == "AT":
            if not isinstance(value, str):
                problems.append(f"{item}: a {vr} value must be a string, not {_kind(value)}")
        elif vr in NUMBER_VRS:
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"{item}: a {vr} value must be a number, not {_kind(value)}")
        elif vr in DECIMAL_STRING_VRS:
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                problems.append(f"{item}: a {vr} value must be a number, not {_kind(value)}")
        elif vr == "PN" and not (
            isinstance(value, dict)
            and set(value) <= PN_GROUPS
            and all(isinstance(v, str) for v in value.values())
        ):
            problems.append(
                f"{item}: a PN value must be an object of Alphabetic/Ideographic/Phonetic strings"
            )
    return problems


def _name(tag: str) -> str:
    """``Procedure Step Label (0074,1204)``: what a person reading the Warning recognises."""
    label = f"({tag[:4].upper()},{tag[4:].upper()})"
    try:
        description = dictionary_description(int(tag, 16))
    except KeyError:
        return label
    return f"{description} {label}" if description else label


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def upper_case_tags(dataset: dict[str, Any]) -> dict[str, Any]:
    """The data set with its tags (and those of its sequence items) in upper case, the
    form stored and compared everywhere (PS3.18 F.2.1.1 writes them upper-case)."""
    out: dict[str, Any] = {}
    for key, element in dataset.items():
        if (
            isinstance(element, dict)
            and element.get("vr") == "SQ"
            and isinstance(element.get("Value"), list)
        ):
            element = {
                **element,
                "Value": [
                    upper_case_tags(v) if isinstance(v, dict) else v for v in element["Value"]
                ],
            }
        out[key.upper()] = element
    return out
