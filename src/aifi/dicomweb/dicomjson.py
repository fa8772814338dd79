"""DICOM JSON (PS3.18 Annex F) for stored instances.

Metadata is produced once, when an instance is received, from a data set read with
``defer_size`` so that large values are not loaded: Pixel Data (and Float/Double Float Pixel
Data) is never read, and every binary value above :data:`BULK_DATA_THRESHOLD` bytes becomes
a ``BulkDataURI``. The stored URIs are *relative tag paths* (``7FE00010``,
``00880200/0/7FE00010``: tag / item index / tag); :func:`absolutize_bulkdata` turns them
into ``{instance URL}/bulkdata/{path}`` when metadata is served (PS3.18 §10.4.1.1.2),
so stored metadata does not depend on the host name the hub is reached at.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from pydicom import Dataset, config
from pydicom.datadict import dictionary_VR
from pydicom.tag import Tag

from aifi.dicom_json import DicomJson
from aifi.dicomweb import header_json
from aifi.dicomweb.header_json import element_json

log = logging.getLogger(__name__)

BULK_DATA_THRESHOLD = 1024
"""Binary values longer than this (bytes) are served as bulk data, not inline."""

PIXEL_DATA_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)
"""Float Pixel Data, Double Float Pixel Data, Pixel Data."""


def configure_pydicom() -> None:
    """Be tolerant when reading (CONVENTIONS.md): invalid values are kept as received,
    not warned about per element; checks that matter are done explicitly by STOW-RS."""
    config.settings.reading_validation_mode = config.IGNORE
    config.settings.writing_validation_mode = config.IGNORE


def _element_json(elem: Any, path: str) -> dict[str, Any] | None:
    try:
        result: dict[str, Any] = elem.to_json_dict(lambda _e: path, BULK_DATA_THRESHOLD)
    except Exception:  # pydicom raises many types for malformed values
        log.warning("dropping unencodable element %s from metadata", path, exc_info=True)
        return None
    return result


def _dataset_json(ds: Dataset, prefix: str, fast: bool) -> DicomJson:
    out: DicomJson = {}
    elements = ds._dict  # raw elements as read: converting them is what costs
    # the encodings pydicom decodes text with (Dataset.__getitem__)
    plain_text = fast and header_json.plain_charset(
        ds.original_character_set or ds._character_set  # type: ignore[arg-type]
    )
    for tag in sorted(elements):
        tag = Tag(tag)
        key = f"{tag:08X}"
        if tag.element == 0:  # group lengths are not part of DICOM JSON (PS3.18 F.2)
            continue
        if tag in PIXEL_DATA_TAGS:
            # The raw element as it is: a deferred value is not read.
            raw = ds.get_item(tag, keep_deferred=True)
            vr = getattr(raw, "VR", None) or ("OW" if tag == 0x7FE00010 else dictionary_VR(tag))
            if vr == "OB or OW":
                vr = "OW"
            out[key] = {"vr": str(vr), "BulkDataURI": prefix + key}
            continue
        if fast:
            encoded = element_json(elements[tag], prefix + key, plain_text)
            if encoded is not None:
                out[key] = encoded
                continue
        elem = ds[tag]
        if elem.VR == "SQ":
            items = [
                _dataset_json(item, f"{prefix}{key}/{index}/", fast)
                for index, item in enumerate(elem.value or [])
            ]
            out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            continue
        encoded = _element_json(elem, prefix + key)
        if encoded is not None:
            out[key] = encoded
    return out


def dataset_to_metadata(ds: Dataset) -> DicomJson:
    """DICOM JSON of ``ds`` with relative BulkDataURIs; pixel data is never loaded.

    Common elements are encoded from their raw bytes (:mod:`aifi.dicomweb.header_json`),
    the others by pydicom (:func:`pydicom_metadata`), with the same result."""
    return _dataset_json(ds, "", header_json.enabled())


def pydicom_metadata(ds: Dataset) -> DicomJson:
    """:func:`dataset_to_metadata` with every element converted by pydicom (the reference
    the fast path is tested against)."""
    return _dataset_json(ds, "", False)


def absolutize_bulkdata(metadata: DicomJson, instance_url: str) -> DicomJson:
    """A copy of stored metadata whose BulkDataURIs point at ``{instance_url}/bulkdata/…``."""
    result = copy.deepcopy(metadata)

    def walk(obj: DicomJson) -> None:
        for attr in obj.values():
            uri = attr.get("BulkDataURI")
            if uri is not None and "://" not in uri:
                attr["BulkDataURI"] = f"{instance_url}/bulkdata/{uri}"
            for item in attr.get("Value", ()) if attr.get("vr") == "SQ" else ():
                walk(item)

    walk(result)
    return result
