"""DICOM JSON (PS3.18 Annex F) straight from the raw elements pydicom read: the fast path
of :func:`aifi.dicomweb.dicomjson.dataset_to_metadata`. Pure code, no I/O.

pydicom turns each raw element into a ``DataElement`` (hooks, value classes such as
``DSfloat``, ``UID`` and ``PersonName``, multiplicity checks) before
``DataElement.to_json_dict`` turns that into JSON: some 40 µs per element, which made the
DICOM JSON of a received header cost more than reading it. For the value representations
that make up nearly every header (PS3.5 §6.2), :func:`element_json` decodes the raw bytes
directly into exactly what that path produces. Whatever it is not certain about returns
``None`` and is left to pydicom by the caller: private tags in implicit VR and ambiguous
VRs (``US or SS``, ...), UN, SQ, text that is not plain ASCII or contains ISO 2022 escapes
(PS3.5 §6.1.2.5), numbers that Python and pydicom could read differently, values of a
length that does not fit the VR, and any pydicom configuration other than the tolerant
defaults the hub uses (:func:`enabled`). ``tests/unit/test_header_json.py`` checks the
equivalence over pydicom's own test files and generated edge cases.
"""

from __future__ import annotations

import base64
import re
import struct
from collections.abc import Callable
from typing import Any

from pydicom import config, hooks
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement

__all__ = ["INLINE_LIMIT", "element_json", "enabled", "plain_charset"]

INLINE_LIMIT = (1024 // 4) * 3
"""Binary values longer than this many bytes become a BulkDataURI: pydicom's rule for a
1024-byte bulk data threshold (base64 makes a value a third longer)."""

_UNDEFINED_LENGTH = 0xFFFFFFFF
_LUT_DESCRIPTORS = frozenset({0x00283002, 0x00281101, 0x00281102, 0x00281103, 0x00282000})
"""pydicom corrects the first value of these (signed → unsigned): left to pydicom."""

# DS and IS values Python's float() and int() read exactly as pydicom's DSfloat and IS do.
_DS = re.compile(r" *[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)? *")
_IS = re.compile(r" *[+-]?[0-9]{1,15} *")

_PLAIN_CODECS = frozenset(
    {
        "iso8859",  # the default repertoire (no Specific Character Set)
        "latin_1",
        "iso8859_2",
        "iso8859_3",
        "iso8859_4",
        "iso_ir_126",
        "iso_ir_127",
        "iso_ir_138",
        "iso_ir_144",
        "iso_ir_148",
        "iso_ir_166",
        "shift_jis",
        "UTF8",
        "GB18030",
        "GBK",
    }
)
"""Python codecs pydicom uses for single-value Specific Character Sets without code
extensions, where plain ASCII bytes decode (and person names round-trip) unchanged."""
_CHARSET_VRS = frozenset({"LO", "LT", "PN", "SH", "ST", "UC", "UT"})
"""Value representations whose text Specific Character Set (0008,0005) applies to."""

_Json = dict[str, Any]
_Handler = Callable[[str, bytes, bool], "_Json | None"]


def enabled() -> bool:
    """Whether pydicom is configured as :func:`element_json` assumes (the hub's tolerant
    reading: no validation, default value classes, default hooks)."""
    return (
        config.settings.reading_validation_mode == config.IGNORE
        and not config.datetime_conversion
        and not config.use_DS_numpy
        and not config.use_IS_numpy
        and not config.use_DS_decimal
        and not config.use_none_as_empty_text_VR_value
        and config.data_element_callback is None
        and hooks.hooks.raw_element_vr is hooks.raw_element_vr
        and hooks.hooks.raw_element_value is hooks.raw_element_value
        and not hooks.hooks.raw_element_kwargs
    )


def plain_charset(encodings: str | list[str] | None) -> bool:
    """Whether text in a data set with these pydicom encodings (``Dataset._character_set``)
    may take the fast path: one character set, not an ISO 2022 one (PS3.5 §6.1.2.5)."""
    if encodings is None or isinstance(encodings, str):
        return encodings is None or encodings in _PLAIN_CODECS
    return len(encodings) == 1 and encodings[0] in _PLAIN_CODECS


def _values(vr: str, items: list[str]) -> _Json:
    """One value that may be empty, or several (pydicom keeps empty ones then)."""
    if len(items) == 1:
        return {"vr": vr, "Value": items} if items[0] else {"vr": vr}
    return {"vr": vr, "Value": items}


def _text(value: bytes) -> str | None:
    """Plain ASCII decodes the same in every character set pydicom supports; ESC would
    start an ISO 2022 code extension."""
    if value.isascii() and b"\x1b" not in value:
        return value.decode("ascii")
    return None


def _code_string(vr: str, value: bytes, _little: bool) -> _Json | None:
    """AS, CS, DA, DT, TM (pydicom's ``multi_string``)."""
    text = _text(value)
    if text is None:
        return None
    return _values(vr, text.rstrip(" \x00").split("\\"))


def _application_entity(vr: str, value: bytes, _little: bool) -> _Json | None:
    text = _text(value)
    if text is None:
        return None
    return _values(vr, [item.strip() for item in text.split("\\")])


def _uid(vr: str, value: bytes, _little: bool) -> _Json | None:
    text = _text(value)
    if text is None:
        return None
    return _values(vr, [item.strip() for item in text.rstrip(" \x00").split("\\")])


def _short_text(vr: str, value: bytes, _little: bool) -> _Json | None:
    """SH, LO, UC (pydicom's ``convert_text``)."""
    text = _text(value)
    if text is None:
        return None
    return _values(vr, [item.rstrip("\x00 ") for item in text.split("\\")])


def _long_text(vr: str, value: bytes, _little: bool) -> _Json | None:
    """LT, ST, UT: one value, backslashes included."""
    text = _text(value)
    if text is None:
        return None
    return _values(vr, [text.rstrip("\x00 ")])


def _uri(vr: str, value: bytes, _little: bool) -> _Json | None:
    text = _text(value)
    if text is None:
        return None
    return _values(vr, [text.rstrip()])


def _person_name(vr: str, value: bytes, _little: bool) -> _Json | None:
    text = _text(value.rstrip(b"\x00 "))
    if text is None:
        return None
    if not text:
        return {"vr": vr}
    names = []
    for item in text.split("\\"):
        groups = item.split("=")
        while groups and not groups[-1]:
            groups.pop()
        if not groups:
            return None  # an empty name among several: pydicom's own business
        name = {"Alphabetic": groups[0]}
        if len(groups) > 1:
            name["Ideographic"] = groups[1]
        if len(groups) > 2:
            name["Phonetic"] = groups[2]
        names.append(name)
    return {"vr": vr, "Value": names}


def _integer_string(vr: str, value: bytes, _little: bool) -> _Json | None:
    text = _text(value)
    if text is None:
        return None
    items = text.rstrip(" \x00").split("\\")
    if len(items) == 1 and not items[0].strip():
        return {"vr": vr}
    if not all(_IS.fullmatch(item) for item in items):
        return None
    return {"vr": vr, "Value": [int(item) for item in items]}


def _decimal_string(vr: str, value: bytes, _little: bool) -> _Json | None:
    text = _text(value)
    if text is None:
        return None
    items = text.strip().rstrip(" \x00").split("\\")
    if len(items) == 1 and not items[0]:
        return {"vr": vr}
    if not all(_DS.fullmatch(item) for item in items):
        return None
    return {"vr": vr, "Value": [float(item) for item in items]}


def _numbers(code: str, size: int) -> _Handler:
    def handler(vr: str, value: bytes, little: bool) -> _Json | None:
        count, rest = divmod(len(value), size)
        if rest:
            return None
        numbers = struct.unpack(f"{'<' if little else '>'}{count}{code}", value)
        return {"vr": vr, "Value": list(numbers)}

    return handler


def _attribute_tag(vr: str, value: bytes, little: bool) -> _Json | None:
    count, rest = divmod(len(value), 4)
    if rest:
        return None
    numbers = struct.unpack(f"{'<' if little else '>'}{2 * count}H", value)
    return {
        "vr": vr,
        "Value": [f"{numbers[i]:04X}{numbers[i + 1]:04X}" for i in range(0, 2 * count, 2)],
    }


_HANDLERS: dict[str, _Handler] = {
    "AE": _application_entity,
    "AS": _code_string,
    "AT": _attribute_tag,
    "CS": _code_string,
    "DA": _code_string,
    "DS": _decimal_string,
    "DT": _code_string,
    "FD": _numbers("d", 8),
    "FL": _numbers("f", 4),
    "IS": _integer_string,
    "LO": _short_text,
    "LT": _long_text,
    "PN": _person_name,
    "SH": _short_text,
    "SL": _numbers("l", 4),
    "SS": _numbers("h", 2),
    "ST": _long_text,
    "SV": _numbers("q", 8),
    "TM": _code_string,
    "UC": _short_text,
    "UI": _uid,
    "UL": _numbers("L", 4),
    "UR": _uri,
    "US": _numbers("H", 2),
    "UT": _long_text,
    "UV": _numbers("Q", 8),
}
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_PLAIN_TEXT = frozenset(
    {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
)
_PLAIN_INT = frozenset({"SL", "SS", "SV", "UL", "US", "UV"})


def element_json(
    element: RawDataElement | DataElement, path: str, plain_text: bool
) -> _Json | None:
    """The DICOM JSON attribute for ``element``, as pydicom would write it with the
    relative BulkDataURI ``path``; ``None`` when pydicom must do it (see the module
    docstring). ``plain_text``: the data set's character set is :func:`plain_charset`.
    Only call it when :func:`enabled`."""
    if type(element) is not RawDataElement:
        return _converted(element) if isinstance(element, DataElement) else None
    tag, vr, length, value = element[:4]
    if tag in _LUT_DESCRIPTORS:
        return None
    if vr is None:  # implicit VR: the data dictionary's, unless private or ambiguous
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            return None
        if vr not in _HANDLERS and vr not in _BINARY:
            return None
    if value is None:  # deferred: only its length is known, which is enough for bulk data
        if vr in _BINARY and length != _UNDEFINED_LENGTH and length > INLINE_LIMIT:
            return {"vr": vr, "BulkDataURI": path}
        return None
    if type(value) is not bytes:
        return None
    if vr in _BINARY:
        if not value:
            return {"vr": vr}
        if len(value) > INLINE_LIMIT:
            return {"vr": vr, "BulkDataURI": path}
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
    handler = _HANDLERS.get(vr)
    if handler is None or (not plain_text and vr in _CHARSET_VRS):
        return None
    if not value:
        return {"vr": vr}
    return handler(vr, value, element.is_little_endian)


def _converted(element: DataElement) -> _Json | None:
    """A data element pydicom has already converted: only the plain single values."""
    vr, value = element.VR, element.value
    if vr in _PLAIN_TEXT and isinstance(value, str):
        return {"vr": vr, "Value": [value]} if value else {"vr": vr}
    if vr in _PLAIN_INT and type(value) is int:
        return {"vr": vr, "Value": [value]}
    return None
