"""Frames of stored instances for WADO-RS (PS3.18 §10.4.1.1 Frames; PS3.5 §8.1.1 and A.4).

:class:`FrameReader`: native frames are read at their byte offset without loading the rest of
the pixel data; encapsulated frames come from their fragments through :mod:`pydicom.encaps`.
:func:`choose_frame_encoding` negotiates how frames (or pixel data bulk data) are sent
(PS3.18 §8.7.3.3); :func:`parse_frame_list` reads a frame list. Pure code, no HTTP.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from pydicom import Dataset, dcmread
from pydicom.encaps import generate_frames, get_frame
from pydicom.errors import InvalidDicomError
from pydicom.pixels.utils import pack_bits, pixel_array
from pydicom.uid import UID

from aifi.dicomweb.media import MediaType
from aifi.dicomweb.transcode import file_views
from aifi.dicomweb.transfer_syntax import (
    COMPRESSED_MEDIA_TYPES,
    DEFAULT_TRANSFER_SYNTAX,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    LOSSY,
    OCTET_STREAM,
    PIXEL_DATA_TAGS,
    TranscodeError,
    can_decode,
    swap_to_little_endian,
)
from aifi.errors import HubError, InvalidRequest, NotFound

_LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC"})
_LONG_LENGTH_VRS |= {b"UN", b"UR", b"UT", b"UV"}


# -- frames -------------------------------------------------------------------------------


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True, slots=True)
class PixelLocation:
    """Where the (top-level) pixel data element's value is, in the file or in memory."""

    tag: int
    offset: int
    length: int
    """Value length; ``0xFFFFFFFF`` when encapsulated (undefined length)."""

    @property
    def encapsulated(self) -> bool:
        return self.length == 0xFFFFFFFF


def _locate_pixel_data(f: IO[bytes], little: bool, implicit: bool) -> PixelLocation | None:
    """Parse the element header at the file position (where ``stop_before_pixels`` left
    it) and return where its value is; ``None`` when there is no pixel data element."""
    start = f.tell()
    head = f.read(8)
    if len(head) < 8:
        return None
    order = "<" if little else ">"
    group, element = struct.unpack(order + "HH", head[:4])
    tag = group << 16 | element
    if tag not in PIXEL_DATA_TAGS:
        return None
    if implicit:
        return PixelLocation(tag, start + 8, struct.unpack(order + "L", head[4:])[0])
    if head[4:6] in _LONG_LENGTH_VRS:
        extra = f.read(4)
        if len(extra) < 4:
            return None
        return PixelLocation(tag, start + 12, struct.unpack(order + "L", extra)[0])
    return PixelLocation(tag, start + 8, struct.unpack(order + "H", head[6:])[0])


class FrameReader:
    """The frames of one stored instance (PS3.18 §10.4.1.1 Frames; PS3.5 §8.1.1 and A.4).

    Little-endian, non-deflated files are read in place: only the header and the frames
    asked for are read. Deflated and big-endian files (rare, and usually small) are read
    whole and converted in memory. Use as a context manager.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[bytes] = path.open("rb")
        try:
            self._open()
        except BaseException:
            self._file.close()
            raise

    def _open(self) -> None:
        try:
            header = dcmread(self._file, stop_before_pixels=True)
        except (InvalidDicomError, ValueError, EOFError, struct.error) as exc:
            raise HubError(f"Stored file {self.path.name} cannot be read: {exc}") from exc
        self.stored_syntax = str(header.file_meta.get("TransferSyntaxUID", ""))
        self.header = header
        self._dataset: Dataset | None = None  # whole data set, for in-memory sources
        self._source: IO[bytes] = self._file
        self.location: PixelLocation | None = None
        if self.stored_syntax in (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN):
            self._load_in_memory()
        else:
            self.location = _locate_pixel_data(
                self._file,
                little=True,
                implicit=self.stored_syntax == IMPLICIT_VR_LITTLE_ENDIAN,
            )
        self.rows = _int(header.get("Rows"), 0)
        self.columns = _int(header.get("Columns"), 0)
        self.samples = _int(header.get("SamplesPerPixel"), 1)
        self.bits_allocated = _int(header.get("BitsAllocated"), 0)
        if self.location is not None and self.location.tag == 0x7FE00008:
            self.bits_allocated = 32
        elif self.location is not None and self.location.tag == 0x7FE00009:
            self.bits_allocated = 64
        self.number_of_frames = max(_int(header.get("NumberOfFrames"), 1), 1)
        self.photometric = str(header.get("PhotometricInterpretation", ""))

    def _load_in_memory(self) -> None:
        self._file.seek(0)
        ds = dcmread(self._file)
        if self.stored_syntax == EXPLICIT_VR_BIG_ENDIAN:
            swap_to_little_endian(ds)
            ds.set_original_encoding(False, True)
            ds.file_meta.TransferSyntaxUID = UID(EXPLICIT_VR_LITTLE_ENDIAN)
        self._dataset = ds
        for tag in sorted(PIXEL_DATA_TAGS, reverse=True):
            if tag in ds:
                value = bytes(ds[tag].value or b"")
                self._source = io.BytesIO(value)
                self.location = PixelLocation(tag, 0, len(value))
                break

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    # -- what the frames are ------------------------------------------------------------

    @property
    def has_pixels(self) -> bool:
        return self.location is not None and self.rows > 0 and self.columns > 0

    @property
    def encapsulated(self) -> bool:
        return self.location is not None and self.location.encapsulated

    @property
    def media_type(self) -> str:
        """The bulk data media type of frames as stored (PS3.18 Table 8.7.3-5)."""
        if not self.encapsulated:
            return OCTET_STREAM
        return COMPRESSED_MEDIA_TYPES.get(self.stored_syntax, OCTET_STREAM)

    @property
    def frame_bits(self) -> int:
        """Bits in one native frame (YBR_FULL_422 holds two samples a pixel, PS3.3
        C.7.6.3.1.2)."""
        samples = 2 if self.photometric == "YBR_FULL_422" else self.samples
        return self.rows * self.columns * samples * self.bits_allocated

    def check_frames(self, numbers: list[int]) -> None:
        """Raise :class:`NotFound` unless every 1-based frame number exists."""
        if not self.has_pixels:
            raise NotFound("The instance has no pixel data")
        beyond = [n for n in numbers if n > self.number_of_frames]
        if beyond:
            raise NotFound(
                f"Frame {beyond[0]} does not exist; the instance has "
                f"{self.number_of_frames} frame(s)"
            )

    # -- reading ------------------------------------------------------------------------

    def stored_frame(self, number: int) -> bytes:
        """Frame ``number`` (1-based) as stored: native pixel data in little endian
        (bit-packed frames realigned to a byte boundary), or the compressed bitstream
        without fragment delimiters (PS3.18 §8.7.3.3.2)."""
        assert self.location is not None
        index = number - 1
        if self.location.encapsulated:
            return self._encapsulated_frame(index)
        return self._native_frame(index)

    def _native_frame(self, index: int) -> bytes:
        assert self.location is not None
        bits = self.frame_bits
        start_bit = index * bits
        first = start_bit // 8
        last = -(-(start_bit + bits) // 8)
        self._source.seek(self.location.offset + first)
        data = self._source.read(last - first)
        if len(data) < last - first:
            raise HubError(f"Pixel data of {self.path.name} is shorter than its frames")
        shift = start_bit % 8
        if shift == 0 and bits % 8 == 0:
            return data
        # Bit-packed (Bits Allocated 1) frame not starting on a byte boundary: realign.
        unpacked = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")
        return np.packbits(unpacked[shift : shift + bits], bitorder="little").tobytes()

    def _extended_offsets(self) -> tuple[bytes, bytes] | None:
        offsets = self.header.get("ExtendedOffsetTable")
        lengths = self.header.get("ExtendedOffsetTableLengths")
        if offsets is None or lengths is None:
            return None
        return bytes(offsets), bytes(lengths)

    def _encapsulated_frame(self, index: int) -> bytes:
        assert self.location is not None
        self._source.seek(self.location.offset)
        try:
            return get_frame(
                self._source,
                index,
                number_of_frames=self.number_of_frames,
                extended_offsets=self._extended_offsets(),
            )
        except (ValueError, struct.error) as exc:
            raise HubError(f"Cannot find frame {index + 1} in {self.path.name}: {exc}") from exc

    def stored_frames(self) -> Iterator[bytes]:
        """Every frame as stored, in order (compressed: one bitstream per frame)."""
        assert self.location is not None
        if not self.location.encapsulated:
            for number in range(1, self.number_of_frames + 1):
                yield self._native_frame(number - 1)
            return
        self._source.seek(self.location.offset)
        yield from generate_frames(
            self._source,
            number_of_frames=self.number_of_frames,
            extended_offsets=self._extended_offsets(),
        )

    def native_value(self, window: int) -> Iterator[bytes | memoryview]:
        """The whole native pixel data value, little endian, in pieces (bulk data)."""
        assert self.location is not None and not self.location.encapsulated
        if self._dataset is not None:
            self._source.seek(0)
            yield self._source.read()
            return
        yield from file_views(self.path, self.location.length, window, self.location.offset)

    def _decode_source(self) -> Any:
        if self._dataset is not None:
            return self._dataset
        self._file.seek(0)
        return self._file

    def array(self, number: int) -> np.ndarray:
        """Frame ``number`` decoded to an array (YBR converted to RGB), for rendering."""
        try:
            arr: np.ndarray = pixel_array(self._decode_source(), index=number - 1)
        except (RuntimeError, ValueError, NotImplementedError, AttributeError) as exc:
            raise TranscodeError(
                f"Pixel data in transfer syntax {self.stored_syntax} cannot be decoded: {exc}"
            ) from exc
        return arr

    def decoded_frame(self, number: int) -> bytes:
        """Frame ``number`` as uncompressed little-endian bytes (Explicit VR Little Endian
        native format; YBR colour decoded to RGB, planar configuration 0)."""
        if not self.encapsulated:
            return self.stored_frame(number)
        if not can_decode(self.stored_syntax):
            raise TranscodeError(
                f"No decoder is available for transfer syntax {self.stored_syntax}"
            )
        arr = self.array(number)
        if self.bits_allocated == 1:
            return pack_bits(arr)
        return np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


@dataclass(frozen=True, slots=True)
class FrameEncoding:
    """How pixel data frames are sent."""

    media_type: str
    """Media type of each part (or of a single-part body)."""
    syntax: str
    decode: bool
    """Decompress to native pixels; otherwise frames go as stored."""
    single: bool
    """A single-part body rather than multipart/related."""

    @property
    def part_type(self) -> str:
        return f"{self.media_type}; transfer-syntax={self.syntax}"


def choose_frame_encoding(
    ranges: list[MediaType], reader: FrameReader, allow_single: bool
) -> FrameEncoding:
    """Negotiate frames or pixel data bulk data (PS3.18 §8.7.3.3, Tables 8.7.3-4/-5).

    Frames go as stored when the stored media type and transfer syntax are acceptable,
    when ``transfer-syntax=*`` is given (compressed frames then keep their own media
    type, e.g. ``image/jpeg``), or when the media type's default transfer syntax was asked
    for and only a lossy form is stored (§8.7.3). Otherwise they are decompressed to
    ``application/octet-stream`` (Explicit VR Little Endian). Among equally preferred
    ranges, sending as stored wins. :class:`TranscodeError` (406) when nothing fits.
    """
    stored_type = reader.media_type
    stored_syntax = reader.stored_syntax if reader.encapsulated else EXPLICIT_VR_LITTLE_ENDIAN
    options: list[tuple[float, int, int, FrameEncoding]] = []
    for order, r in enumerate(ranges):
        if r.mime == "multipart/related":
            wanted, single = r.related_type or OCTET_STREAM, False
        elif r.mime in ("*/*", "multipart/*"):
            wanted, single = OCTET_STREAM, False
        else:
            wanted, single = r.mime, True
        if single and not allow_single:
            continue
        syntax = r.transfer_syntax
        matches = wanted in ("*/*", stored_type) or (
            wanted == "image/*" and stored_type.startswith("image/")
        )
        if syntax == "*":
            as_stored = matches or wanted == OCTET_STREAM
        else:
            default = DEFAULT_TRANSFER_SYNTAX.get(stored_type, EXPLICIT_VR_LITTLE_ENDIAN)
            as_stored = matches and (
                (syntax or default) == stored_syntax or (syntax is None and stored_syntax in LOSSY)
            )
        if as_stored:
            encoding = FrameEncoding(stored_type, stored_syntax, False, single)
            options.append((-r.q, 0, order, encoding))
        elif (
            wanted in (OCTET_STREAM, "*/*")
            and syntax in (None, EXPLICIT_VR_LITTLE_ENDIAN)
            and can_decode(reader.stored_syntax)
        ):
            encoding = FrameEncoding(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN, True, single)
            options.append((-r.q, 1, order, encoding))
    if not options:
        raise TranscodeError(
            f"Frames stored as {stored_type} ({reader.stored_syntax}) cannot be sent as any "
            'acceptable media type; try multipart/related; type="application/octet-stream"'
        )
    return min(options, key=lambda o: o[:3])[3]


def parse_frame_list(text: str) -> list[int]:
    """A WADO-RS frame list (``1,3,5``; PS3.18 §10.4.1.1): 1-based positive integers, in
    the order given. Raises :class:`InvalidRequest` (400) when malformed."""
    numbers: list[int] = []
    for piece in text.split(","):
        piece = piece.strip()
        if not piece.isdigit() or len(piece) > 9:
            raise InvalidRequest(f"Malformed frame list {text!r}: {piece!r} is not a number")
        number = int(piece)
        if number < 1:
            raise InvalidRequest(f"Malformed frame list {text!r}: frame numbers start at 1")
        numbers.append(number)
    return numbers
