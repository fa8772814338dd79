"""A streaming reader for ``multipart/related`` bodies (RFC 2387 over RFC 2046 §5.1), as
STOW-RS receives them (PS3.18 §10.5.1, §8.6.1.2). Pure code: no I/O, no asyncio.

The caller feeds the body in chunks of any size and gets events back — the headers of a
part (:class:`PartStart`), its body in pieces (:class:`PartData`) and its end
(:class:`PartEnd`) — so that each part can be written to a file as it arrives. Memory is
bounded by one fed chunk plus the delimiter length (plus, while a header block is being
read, :attr:`MultipartReader.max_header_size`): a 2 GB request is never held in memory.

Grammar handled (RFC 2046 §5.1.1)::

    body        := [preamble CRLF] dash-boundary padding CRLF part
                   *(CRLF dash-boundary padding CRLF part)
                   CRLF dash-boundary "--" padding [CRLF epilogue]
    dash-boundary := "--" boundary      padding := *(SP / HTAB)
    part        := header-fields CRLF body-octets

The body of a part ends right before ``CRLF "--" boundary``; that CRLF belongs to the
delimiter, not to the part (a DICOM part's bytes are returned exactly as sent). Bare-LF line
ends are *not* accepted around delimiters: guessing there could silently change the last
byte of binary data, and every DICOMweb client sends CRLF. Errors (:class:`MultipartError`,
an :class:`~aifi.errors.InvalidRequest`, i.e. 400) name what is wrong: no first delimiter
(within :attr:`~MultipartReader.max_preamble`), characters after a delimiter, a header
block over the size limit or with a line that is not ``name: value``, and a body that ends
before the close delimiter (:meth:`MultipartReader.finish`).

Why not a library: the standard library's ``email`` parser (and ``cgi``, gone in 3.13)
needs the whole message in memory; ``python-multipart`` streams, but is built for HTML
``multipart/form-data`` (it expects ``Content-Disposition`` names, exposes form fields and
files, and its callback API copies per callback); ``requests-toolbelt``'s decoder is not
streaming either. The delimiter search here is one ``bytes.find`` per fed chunk over a
``bytearray`` (C speed, no per-byte Python loop), which is what a STOW-RS hot path needs.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from aifi.errors import InvalidRequest

__all__ = [
    "MultipartError",
    "MultipartReader",
    "PartData",
    "PartEnd",
    "PartEvent",
    "PartStart",
    "validate_boundary",
]

# RFC 2046 §5.1.1 allows 1-70 characters from bchars, not ending with a space. Tolerant
# reading: Orthanc's DICOMweb plugin sends 73-character boundaries (two UUIDs), so any
# printable ASCII is accepted up to MAX_BOUNDARY characters; never CR, LF or controls.
MAX_BOUNDARY = 200
_BOUNDARY = re.compile(r"^[\x21-\x7e][\x20-\x7e]*$")
_CRLF = b"\r\n"
_PADDING = b" \t"
_STEP = 16 * 1024
"""Outside part bodies, the fed data is buffered (copied) in pieces of at most this size."""


class MultipartError(InvalidRequest):
    """The body is not a well-formed ``multipart/related`` body for this boundary."""


@dataclass(frozen=True, slots=True)
class PartStart:
    """A part begins; ``headers`` has lower-case names and latin-1 decoded values."""

    index: int
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class PartData:
    """The next bytes of the current part's body (never empty): ``bytes``, or a read-only
    ``memoryview`` of the fed chunk (no copy)."""

    data: bytes | memoryview


@dataclass(frozen=True, slots=True)
class PartEnd:
    """The current part is complete: its closing delimiter has been seen."""

    index: int


PartEvent = PartStart | PartData | PartEnd


class _State(enum.Enum):
    PREAMBLE = "preamble"
    DELIMITER_LINE = "delimiter line"
    HEADERS = "headers"
    BODY = "body"
    EPILOGUE = "epilogue"


def validate_boundary(boundary: str) -> str:
    """Return ``boundary`` if it can be one, else raise :class:`MultipartError`."""
    if not (len(boundary) <= MAX_BOUNDARY and _BOUNDARY.fullmatch(boundary)) or boundary[-1] == " ":
        raise MultipartError(
            f"Invalid multipart boundary {boundary[:80]!r}: it must be 1-{MAX_BOUNDARY} "
            "printable ASCII characters, not ending with a space (RFC 2046 §5.1.1)"
        )
    return boundary


class MultipartReader:
    """Incremental ``multipart/related`` parser.

    >>> reader = MultipartReader("b")
    >>> events = reader.feed(b"--b\\r\\nContent-Type: application/dicom\\r\\n\\r\\nDICM")
    >>> events += reader.feed(b"\\r\\n--b--\\r\\n")
    >>> reader.finish()
    >>> [type(e).__name__ for e in events]
    ['PartStart', 'PartData', 'PartEnd']
    """

    max_header_size: int
    """Upper bound (bytes) of one part's header block."""
    max_preamble: int
    """How far (bytes) to look for the first delimiter before calling the body garbage."""

    def __init__(
        self,
        boundary: str | bytes,
        *,
        max_header_size: int = 16 * 1024,
        max_preamble: int = 64 * 1024,
        max_padding: int = 1024,
    ) -> None:
        text = boundary.decode("latin-1") if isinstance(boundary, bytes) else boundary
        self.boundary = validate_boundary(text).encode("latin-1")
        self.max_header_size = max_header_size
        self.max_preamble = max_preamble
        self.max_padding = max_padding
        # The delimiter that ends a part (and the first one, see below): CRLF "--" boundary.
        self._delimiter = _CRLF + b"--" + self.boundary
        # The first delimiter may open the body without a preceding CRLF; pretending the
        # body starts with CRLF lets one search find it either way.
        self._buffer = bytearray(_CRLF)
        self._state = _State.PREAMBLE
        self._consumed = -len(_CRLF)  # body bytes dropped from the buffer's front so far
        self._parts = 0
        self._fed = 0
        self._scan_from = 0  # where the header-end search resumes (no rescans)

    # -- public -----------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the close delimiter has been read (anything after is epilogue)."""
        return self._state is _State.EPILOGUE

    @property
    def parts_started(self) -> int:
        return self._parts

    @property
    def bytes_fed(self) -> int:
        return self._fed

    def feed(self, data: bytes | bytearray | memoryview) -> list[PartEvent]:
        """Parse the next chunk of the body; return the events it completes, in order.

        Body bytes are passed on without copying where possible: a :class:`PartData` may
        be a ``memoryview`` of ``data`` (copied first unless it is immutable ``bytes``)."""
        self._fed += len(data)
        if self._state is _State.EPILOGUE:
            return []  # RFC 2046: the epilogue is ignored
        if not isinstance(data, bytes):
            data = bytes(data)
        events: list[PartEvent] = []
        position, delimiter = 0, len(self._delimiter)
        while True:
            state = self._state
            if state is _State.BODY:
                if len(self._buffer) < delimiter and len(data) - position >= delimiter:
                    position = self._body_direct(data, position, events)
                    continue
                progressed = self._body(events)
            elif state is _State.HEADERS:
                progressed = self._headers(events)
            elif state is _State.DELIMITER_LINE:
                progressed = self._delimiter_line(events)
            elif state is _State.PREAMBLE:
                progressed = self._preamble()
            else:  # EPILOGUE
                self._drop(len(self._buffer))
                return events
            if not progressed:
                if position >= len(data):
                    return events
                # Outside part bodies, the buffer grows by bounded pieces: only what is
                # needed to find the next delimiter or header block is ever copied.
                piece = data[position : position + _STEP]
                self._buffer += piece
                position += len(piece)

    def _body_direct(self, data: bytes, position: int, events: list[PartEvent]) -> int:
        """Body bytes straight from ``data`` (views, no copy); the buffer holds at most a
        held-back tail shorter than the delimiter. Returns the new position in ``data``."""
        delimiter = self._delimiter
        size = len(delimiter)
        tail = bytes(self._buffer)
        if tail:
            # A delimiter that starts in the tail ends within size - 1 bytes of data.
            probe = tail + data[position : position + size - 1]
            index = probe.find(delimiter)
            if index >= 0:
                if index:
                    events.append(PartData(probe[:index]))
                self._end_part(events)
                self._consumed += index + size
                return position + index + size - len(tail)
            events.append(PartData(tail))
            self._drop(len(tail))
        view = memoryview(data)
        index = data.find(delimiter, position)
        if index < 0:
            safe = len(data) - (size - 1)
            if safe > position:
                events.append(PartData(view[position:safe]))
                self._consumed += safe - position
                position = safe
            self._buffer += view[position:]
            return len(data)
        if index > position:
            events.append(PartData(view[position:index]))
        self._consumed += index + size - position
        self._end_part(events)
        return index + size

    def _end_part(self, events: list[PartEvent]) -> None:
        self._buffer.clear()
        events.append(PartEnd(self._parts))
        self._state = _State.DELIMITER_LINE

    def finish(self) -> None:
        """The body has ended: raise :class:`MultipartError` unless it was complete."""
        if self._state is _State.EPILOGUE:
            return
        if self._state is _State.PREAMBLE:
            raise MultipartError(
                "Malformed multipart body: no boundary delimiter "
                f"'--{self.boundary.decode('latin-1')}' found (empty body or wrong boundary)"
            )
        where = {
            _State.DELIMITER_LINE: "in a boundary delimiter line",
            _State.HEADERS: f"in the headers of part {self._parts + 1}",
            _State.BODY: f"in the body of part {self._parts}",
        }[self._state]
        raise MultipartError(
            f"Truncated multipart body: it ended {where} after {self._fed} bytes, "
            "without the close delimiter"
        )

    # -- states -----------------------------------------------------------------------

    def _drop(self, count: int) -> None:
        del self._buffer[:count]
        self._consumed += count

    def _preamble(self) -> bool:
        index = self._buffer.find(self._delimiter)
        if index < 0:
            keep = len(self._delimiter) - 1
            excess = len(self._buffer) - keep
            if excess > 0:
                self._drop(excess)
            if self._consumed + len(self._buffer) > self.max_preamble:
                raise MultipartError(
                    "Malformed multipart body: no boundary delimiter "
                    f"'--{self.boundary.decode('latin-1')}' in the first "
                    f"{self.max_preamble} bytes"
                )
            return False
        self._drop(index + len(self._delimiter))
        self._state = _State.DELIMITER_LINE
        return True

    def _delimiter_line(self, events: list[PartEvent]) -> bool:
        """After ``CRLF--boundary``: ``--`` (close) or padding then CRLF (next part)."""
        buffer = self._buffer
        if len(buffer) < 2:
            return False
        if buffer[:2] == b"--":
            self._drop(2)
            self._state = _State.EPILOGUE
            return True
        position = 0
        size = len(buffer)
        while position < size and buffer[position] in _PADDING:
            position += 1
            if position > self.max_padding:
                raise MultipartError("Malformed multipart body: endless padding after a delimiter")
        if size - position < 2:
            return False
        if buffer[position : position + 2] != _CRLF:
            shown = bytes(buffer[position : position + 16])
            raise MultipartError(
                "Malformed multipart body: unexpected bytes "
                f"{shown!r} after boundary delimiter (expected CRLF or '--')"
            )
        # Keep the CRLF: the header block is searched as CRLF ... CRLF CRLF, which also
        # matches an empty header block (CRLF CRLF right away).
        self._drop(position)
        self._state = _State.HEADERS
        return True

    def _headers(self, events: list[PartEvent]) -> bool:
        limit = self.max_header_size + 4
        end = self._buffer.find(b"\r\n\r\n", self._scan_from, limit)
        if end < 0:
            if len(self._buffer) >= limit:
                raise MultipartError(
                    f"Malformed multipart body: the headers of part {self._parts + 1} "
                    f"exceed {self.max_header_size} bytes"
                )
            self._scan_from = max(0, len(self._buffer) - 3)
            return False
        block = bytes(self._buffer[2:end])
        self._drop(end + 4)
        self._scan_from = 0
        self._parts += 1
        events.append(PartStart(self._parts, _parse_headers(block, self._parts)))
        self._state = _State.BODY
        return True

    def _body(self, events: list[PartEvent]) -> bool:
        buffer = self._buffer
        index = buffer.find(self._delimiter)
        if index < 0:
            # Everything but a possible start of the delimiter is body.
            safe = len(buffer) - (len(self._delimiter) - 1)
            if safe > 0:
                events.append(PartData(_take(buffer, safe)))
                self._drop(safe)
            return False
        if index:
            events.append(PartData(_take(buffer, index)))
        self._drop(index + len(self._delimiter))
        events.append(PartEnd(self._parts))
        self._state = _State.DELIMITER_LINE
        return True


def _take(buffer: bytearray, count: int) -> bytes:
    """The first ``count`` bytes as ``bytes``, copied once (the view is released at once,
    so that the buffer can be resized again)."""
    with memoryview(buffer) as view:
        return view[:count].tobytes()


def _parse_headers(block: bytes, index: int) -> dict[str, str]:
    """``name: value`` lines (RFC 5322 §2.2; obsolete folding tolerated) → lower-case names."""
    headers: dict[str, str] = {}
    if not block:
        return headers
    last: str | None = None
    for raw in block.split(_CRLF):
        line = raw.decode("latin-1")
        if line[:1] in (" ", "\t") and last is not None:
            headers[last] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name or any(c in name for c in " \t"):
            raise MultipartError(
                f"Malformed multipart body: part {index} has a header line that is not "
                f"'name: value': {line[:80]!r}"
            )
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
        last = name
    return headers


def read_parts(body: bytes, boundary: str | bytes) -> list[tuple[dict[str, str], bytes]]:
    """A whole, in-memory ``multipart/related`` body as (headers, body) per part — for
    small responses (clients, the demo); servers stream with :class:`MultipartReader`."""
    reader = MultipartReader(boundary)
    parts: list[tuple[dict[str, str], bytes]] = []
    chunks: list[bytes] = []
    headers: dict[str, str] = {}
    for event in reader.feed(body):
        if isinstance(event, PartStart):
            headers, chunks = event.headers, []
        elif isinstance(event, PartData):
            chunks.append(bytes(event.data))
        else:
            parts.append((headers, b"".join(chunks)))
    reader.finish()
    return parts
