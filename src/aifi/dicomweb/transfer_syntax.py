"""Transfer syntaxes for WADO-RS (PS3.18 §8.7.3): which may be sent, which this hub can
produce from a stored one, the bulk data media types, and byte order (PS3.5 §7.3). Pure code.

Implicit VR Little Endian and Explicit VR Big Endian "shall not be used with Web Services";
the default for ``application/dicom`` and ``application/octet-stream`` is Explicit VR Little
Endian (§8.7.3.4); compressed bulk data travels in the media types of Table 8.7.3-5
(``image/jpeg``, ``image/jls``, ...), each with its own default transfer syntax.
:func:`producible` says what can be made from a stored transfer syntax (lossless conversions
only: re-encoding and decompression, never compression).
"""

from __future__ import annotations

import numpy as np
from pydicom import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from aifi.errors import NotAcceptable

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"

NOT_FOR_WEB = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN})
"""PS3.18 §8.7.3: these transfer syntaxes shall not be used with Web Services."""

NATIVE = frozenset(
    {
        IMPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_LITTLE_ENDIAN,
        DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        EXPLICIT_VR_BIG_ENDIAN,
    }
)
"""Transfer syntaxes with native (not encapsulated) pixel data."""

OCTET_STREAM = "application/octet-stream"

COMPRESSED_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
}
"""Compressed transfer syntax → bulk data media type (PS3.18 Table 8.7.3-5)."""

DEFAULT_TRANSFER_SYNTAX: dict[str, str] = {
    OCTET_STREAM: EXPLICIT_VR_LITTLE_ENDIAN,
    "image/jpeg": "1.2.840.10008.1.2.4.70",
    "image/dicom-rle": "1.2.840.10008.1.2.5",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
}
"""Bulk data media type → its default transfer syntax (PS3.18 Tables 8.7.3-4 and 8.7.3-5)."""

LOSSY = frozenset(
    {
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.81",
        "1.2.840.10008.1.2.4.91",
        "1.2.840.10008.1.2.4.93",
        "1.2.840.10008.1.2.4.203",
    }
)
"""Lossy transfer syntaxes: frames in them may be sent when the media type's default
transfer syntax was asked for, as the origin server has nothing better (PS3.18 §8.7.3)."""

PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
"""Float Pixel Data, Double Float Pixel Data, Pixel Data."""

SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
"""Word size of the binary VRs whose byte order depends on the transfer syntax (PS3.5 §7.3)."""


class TranscodeError(NotAcceptable):
    """The stored data cannot be converted to what the client accepts (406, PS3.18 §8.7.5)."""


def can_decode(transfer_syntax: str) -> bool:
    """Whether an installed decoder handles pixel data in ``transfer_syntax``."""
    if transfer_syntax in NATIVE:
        return True
    try:
        return bool(get_decoder(UID(transfer_syntax)).is_available)
    except NotImplementedError:
        return False


def web_syntax(stored: str) -> str:
    """The transfer syntax ``transfer-syntax=*`` ("as stored") yields: the stored one,
    except the two PS3.18 §8.7.3 forbids on the web, which become Explicit VR LE."""
    return EXPLICIT_VR_LITTLE_ENDIAN if stored in NOT_FOR_WEB else stored


def producible(stored: str, requested: str | None) -> str | None:
    """The transfer syntax to send an instance stored as ``stored`` when the client asked
    for ``requested`` (``None``: not specified, i.e. the default; ``"*"``: any), or
    ``None`` when that cannot be done. Only lossless conversions are made: re-encoding
    and decompression, never compression."""
    if requested is None:
        requested = EXPLICIT_VR_LITTLE_ENDIAN
    if requested == "*":
        return web_syntax(stored)
    if requested in NOT_FOR_WEB:
        return None
    if requested == stored:
        return stored
    if requested == EXPLICIT_VR_LITTLE_ENDIAN and can_decode(stored):
        return EXPLICIT_VR_LITTLE_ENDIAN
    return None


# -- byte order (PS3.5 §7.3) ---------------------------------------------------------


def swap_to_little_endian(ds: Dataset, bits_allocated: int | None = None) -> None:
    """Byte-swap the binary values pydicom keeps as raw bytes, in place (PS3.5 §7.3).

    Numbers (US, SS, FL, ...) are parsed by pydicom and re-encoded when written; raw
    OW/OF/OL/OD/OV values are not. Pixel Data of more than 16 bits allocated is swapped
    in units of its sample size. UN values are left as they are: their structure is not
    known (PS3.5 §6.2.2).
    """
    bits = bits_allocated if bits_allocated is not None else ds.get("BitsAllocated")
    for elem in list(ds):  # iterating converts raw elements
        if elem.VR == "SQ":
            for item in elem.value or ():
                swap_to_little_endian(item, bits)
            continue
        if elem.VR not in SWAP_WIDTH or not elem.value:
            continue
        width = SWAP_WIDTH[elem.VR]
        if elem.tag == 0x7FE00010 and bits and int(bits) > 16:
            width = int(bits) // 8
        elem.value = swapped(bytes(elem.value), width)


def swapped(data: bytes, width: int) -> bytes:
    """``data`` with every ``width``-byte word byte-swapped (big to little endian); a trailing
    partial word is kept as it is."""
    usable = len(data) - len(data) % width
    arr = np.frombuffer(data, dtype=f">u{width}", count=usable // width)
    return arr.astype(f"<u{width}").tobytes() + data[usable:]
