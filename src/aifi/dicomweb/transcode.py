"""Whole stored instances for WADO-RS: sent as stored, or transcoded. Pure code over stored
Part 10 files: a path in, bytes out, no HTTP.

* **As stored** (:func:`file_views`): read-only views of a memory mapping of the stored file,
  never copied into Python buffers.
* **Transcoding** (:func:`to_explicit_vr_little_endian`): re-encodes Implicit VR LE,
  Deflated Explicit VR LE and Explicit VR Big Endian, and decompresses JPEG (baseline,
  extended, lossless), JPEG-LS, JPEG 2000 and RLE with pydicom's decoders (pylibjpeg and
  its plugins). Failure is a :class:`~aifi.dicomweb.transfer_syntax.TranscodeError` (406 Not
  Acceptable).

Which transfer syntax to send is :mod:`aifi.dicomweb.transfer_syntax`; frames
:mod:`aifi.dicomweb.frames`; bulk data :mod:`aifi.dicomweb.bulkdata`.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from pydicom import Dataset, dcmread, dcmwrite
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from aifi.dicomweb.transfer_syntax import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    NATIVE,
    PIXEL_DATA_TAGS,
    TranscodeError,
    can_decode,
    swap_to_little_endian,
)
from aifi.errors import HubError

# -- whole instances ----------------------------------------------------------------------


def _read(path: Path) -> Dataset:
    try:
        return dcmread(path, force=False)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise HubError(f"Stored file {path.name} cannot be read: {exc}") from exc


def _write(ds: Dataset) -> bytes:
    meta = ds.file_meta
    if not meta.get("MediaStorageSOPClassUID") and "SOPClassUID" in ds:
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if not meta.get("MediaStorageSOPInstanceUID") and "SOPInstanceUID" in ds:
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
    buffer = io.BytesIO()
    try:
        dcmwrite(buffer, ds, enforce_file_format=True)
    except (ValueError, AttributeError, TypeError, struct.error) as exc:
        raise TranscodeError(
            f"Cannot encode the instance as Explicit VR Little Endian: {exc}"
        ) from exc
    return buffer.getvalue()


def to_explicit_vr_little_endian(path: Path) -> bytes:
    """The stored instance as Explicit VR Little Endian Part 10 bytes.

    Compressed pixel data is decompressed (YBR colour becomes RGB, planar configuration
    0, as pydicom's :meth:`~pydicom.dataset.Dataset.decompress` does). Raises
    :class:`TranscodeError` when no decoder can handle the data.
    """
    ds = _read(path)
    stored = str(ds.file_meta.get("TransferSyntaxUID", ""))
    if stored == EXPLICIT_VR_BIG_ENDIAN:
        swap_to_little_endian(ds)
        ds.set_original_encoding(False, True)
    elif stored not in NATIVE and any(tag in ds for tag in PIXEL_DATA_TAGS):
        if not can_decode(stored):
            raise TranscodeError(
                f"No decoder is available for transfer syntax {stored}; "
                "ask for transfer-syntax=* to receive it as stored"
            )
        try:
            # Same instance in another transfer syntax: keep its SOP Instance UID.
            ds.decompress(generate_instance_uid=False)
        except (RuntimeError, ValueError, NotImplementedError, AttributeError) as exc:
            raise TranscodeError(
                f"Pixel data in transfer syntax {stored} cannot be decompressed: {exc}"
            ) from exc
    return _write(ds)


def file_views(path: str | Path, size: int, window: int, offset: int = 0) -> Iterator[memoryview]:
    """``size`` bytes of a stored file from ``offset``, as read-only views of a memory
    mapping, at most ``window`` bytes each.

    No Python buffer is allocated or filled: the pages come straight from the page cache
    (pre-faulted here, with ``MAP_POPULATE``, so that whoever writes the views to a socket
    does not fault them in) and are released when the last view is dropped. Stored files
    are never rewritten in place (a new version gets a new name, atomically), so a mapping
    stays valid. Raises :class:`HubError` if the file is shorter than expected.
    """
    populate = getattr(mmap, "MAP_POPULATE", 0)
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < offset + size:
            raise HubError(f"Stored file {os.path.basename(path)} is shorter than indexed")
        position, end = offset, offset + size
        while position < end:
            start = position - position % mmap.ALLOCATIONGRANULARITY
            length = min(window, end - start)
            mapping = mmap.mmap(
                f.fileno(),
                length,
                flags=mmap.MAP_SHARED | populate,
                prot=mmap.PROT_READ,
                offset=start,
            )
            yield memoryview(mapping)[position - start :]
            position = start + length
