"""DICOM JSON (PS3.18 Annex F), the leaf every package shares.

The type of a DICOM JSON object, the one set of value getters, and the compact stored form
(``pack``/``unpack``) the hub keeps metadata in. It imports nothing from :mod:`aifi`, so
``dicomweb``, ``ihe_profiles``, ``fhir``, ``vendors``, ``hub`` and ``gateway`` can all use it
without depending on each other.

Getters follow PS3.18 F.2: an attribute is ``{"vr": VR, "Value": [...]}``; ``Value`` is
absent for an empty attribute; a sequence's values are item objects.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from typing import Any

DicomJson = dict[str, Any]
"""A DICOM JSON object (PS3.18 Annex F): ``{"0020000D": {"vr": "UI", "Value": [...]}}``."""


def values(ds: Mapping[str, Any], tag: str) -> list[Any]:
    """The Value list of ``tag``: empty when the attribute is absent, empty or malformed."""
    element = ds.get(tag)
    found = element.get("Value") if isinstance(element, Mapping) else None
    return found if isinstance(found, list) else []


def first(ds: Mapping[str, Any], tag: str) -> Any:
    """The first value of ``tag``, or None."""
    found = values(ds, tag)
    return found[0] if found else None


def text(ds: Mapping[str, Any], tag: str) -> str | None:
    """The first value of ``tag`` as text, or None when it has none."""
    value = first(ds, tag)
    return str(value) if value is not None else None


def items(ds: Mapping[str, Any], tag: str) -> list[DicomJson]:
    """The items of the sequence ``tag`` (none when absent or empty)."""
    return [item for item in values(ds, tag) if isinstance(item, dict)]


def pack(value: DicomJson) -> bytes:
    """The stored form of a DICOM JSON object: compact JSON, zlib level 1."""
    return zlib.compress(json.dumps(value, separators=(",", ":")).encode(), 1)


def unpack(value: bytes) -> DicomJson:
    """The inverse of :func:`pack`."""
    result: DicomJson = json.loads(zlib.decompress(value))
    return result
