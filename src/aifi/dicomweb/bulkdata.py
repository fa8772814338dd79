"""Bulk data of stored instances for WADO-RS (PS3.18 §10.4.1.1, §8.7.3.3.1): the relative
tag paths of :mod:`aifi.dicomweb.dicomjson` (``00880200/0/7FE00010``) resolved to a value,
little endian. Pixel data goes through :mod:`aifi.dicomweb.frames` instead. Pure code.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread
from pydicom.dataelem import DataElement
from pydicom.errors import InvalidDicomError

from aifi.dicomweb.transfer_syntax import (
    EXPLICIT_VR_BIG_ENDIAN,
    PIXEL_DATA_TAGS,
    SWAP_WIDTH,
    swapped,
)
from aifi.errors import HubError, InvalidRequest, NotFound

_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
_TAG_PATH = re.compile(r"^[0-9A-Fa-f]{8}(/[0-9]{1,9}/[0-9A-Fa-f]{8})*$")


# -- bulk data ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BulkValue:
    """A resolved non-pixel bulk data value, little endian (PS3.18 §8.7.3.3.1)."""

    vr: str
    data: bytes


def parse_tag_path(path: str) -> list[int | str]:
    """``00880200/0/7FE00010`` → ``["00880200", 0, "7FE00010"]``; 400 when malformed."""
    if not _TAG_PATH.fullmatch(path):
        raise InvalidRequest(f"Malformed bulk data path {path!r}")
    return [int(p) if i % 2 else p.upper() for i, p in enumerate(path.split("/"))]


def is_pixel_data_path(path: list[int | str]) -> bool:
    return len(path) == 1 and int(str(path[0]), 16) in PIXEL_DATA_TAGS


def read_bulkdata(file: Path, path: list[int | str]) -> BulkValue:
    """The value at a (non pixel data) tag path; :class:`NotFound` when absent."""
    tags = [int(str(p), 16) for p in path[::2]]
    indexes = [int(p) for p in path[1::2]]
    with file.open("rb") as f:
        try:
            ds = dcmread(f, stop_before_pixels=tags[0] < 0x7FE00008)
        except (InvalidDicomError, ValueError, EOFError, struct.error) as exc:
            raise HubError(f"Stored file {file.name} cannot be read: {exc}") from exc
    big = str(ds.file_meta.get("TransferSyntaxUID", "")) == EXPLICIT_VR_BIG_ENDIAN
    current: Dataset = ds
    for depth, tag in enumerate(tags):
        if tag not in current:
            raise NotFound(f"No attribute ({tag >> 16:04X},{tag & 0xFFFF:04X}) at that path")
        elem: DataElement = current[tag]
        if depth == len(tags) - 1:
            break
        items = elem.value if elem.VR == "SQ" else None
        if items is None or indexes[depth] >= len(items):
            raise NotFound("No such sequence item in the bulk data path")
        current = items[indexes[depth]]
    if elem.VR not in _BINARY_VRS:
        raise NotFound("That attribute is not bulk data")
    data = bytes(elem.value or b"")
    if big and elem.VR in SWAP_WIDTH:
        data = swapped(data, SWAP_WIDTH[elem.VR])
    return BulkValue(str(elem.VR), data)
