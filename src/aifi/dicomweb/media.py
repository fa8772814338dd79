"""Media types and content negotiation for DICOMweb (PS3.18 §8.7: Accept, q-values, the
``type`` and ``transfer-syntax`` parameters of ``multipart/related``). Pure code.

Parameter values may be quoted or not (RFC 9110 §5.6.6); names are case-insensitive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aifi.errors import InvalidRequest

DICOM = "application/dicom"
"""A PS3.10 file (PS3.18 §8.7.3.2)."""
DICOM_JSON = "application/dicom+json"
"""DICOM JSON (PS3.18 Annex F)."""
DICOM_XML = "application/dicom+xml"
"""The Native DICOM Model in XML (PS3.19)."""


@dataclass(frozen=True, slots=True)
class MediaType:
    """``type/subtype`` (lower case) with its parameters (names lower case, values unquoted)."""

    mime: str
    params: dict[str, str] = field(default_factory=dict)
    q: float = 1.0

    @property
    def related_type(self) -> str | None:
        """The ``type`` parameter of a multipart/related media type, lower case."""
        value = self.params.get("type")
        return value.lower() if value else None

    @property
    def transfer_syntax(self) -> str | None:
        return self.params.get("transfer-syntax")

    def admits_part(self, part_type: str) -> bool:
        """For a multipart/related range: does its ``type`` parameter admit parts of
        ``part_type``? An absent type, or a wildcard one (``*/*``, ``application/*``, as
        dicomweb-client sends for bulk data), does."""
        wanted = self.related_type
        return wanted is None or MediaType(wanted).matches(part_type)

    def matches(self, mime: str) -> bool:
        """Does this (possibly wildcard) range accept ``mime``?"""
        if self.mime in ("*/*", mime):
            return True
        major, _, minor = self.mime.partition("/")
        return minor == "*" and mime.startswith(major + "/")


def _split(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and quoted:
            current.append(char)
            escaped = True
        elif char == '"':
            quoted = not quoted
            current.append(char)
        elif char == sep and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped:
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            else:
                out.append(char)
        return "".join(out)
    return value


def parse_media_type(text: str) -> MediaType:
    """Parse one media type with parameters; raise :class:`InvalidRequest` if malformed."""
    pieces = _split(text, ";")
    mime = pieces[0].strip().lower()
    if mime.count("/") != 1 or not all(mime.split("/")):
        raise InvalidRequest(f"Malformed media type: {text.strip()!r}")
    params: dict[str, str] = {}
    q = 1.0
    for piece in pieces[1:]:
        if not piece.strip():
            continue
        name, eq, value = piece.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            raise InvalidRequest(f"Malformed media type parameter {piece.strip()!r} in {text!r}")
        value = _unquote(value)
        if name == "q":
            try:
                q = float(value)
            except ValueError as exc:
                raise InvalidRequest(f"Malformed q-value {value!r}") from exc
            if not 0.0 <= q <= 1.0:
                raise InvalidRequest(f"q-value out of range: {value!r}")
        else:
            params[name] = value
    return MediaType(mime, params, q)


def parse_accept(header: str | None) -> list[MediaType]:
    """The media ranges of an Accept header, most preferred first (stable for equal q).

    A missing or empty header means ``*/*``. Ranges with q=0 are dropped (not acceptable).
    """
    if not header or not header.strip():
        return [MediaType("*/*")]
    ranges = [parse_media_type(part) for part in _split(header, ",") if part.strip()]
    ranges = [r for r in ranges if r.q > 0]
    return sorted(ranges, key=lambda r: -r.q)
