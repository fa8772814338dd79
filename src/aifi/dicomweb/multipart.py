"""Writing ``multipart/related`` bodies (RFC 2387, PS3.18 §8.6.1.2). Pure code.

The reader (streaming, for STOW-RS) is :mod:`aifi.dicomweb.multipart_reader`.
"""

from __future__ import annotations

import secrets


def new_boundary() -> str:
    """A random boundary that cannot plausibly occur inside a DICOM part."""
    return f"aifi-{secrets.token_hex(16)}"


def content_type(related_type: str, boundary: str, **params: str) -> str:
    """The Content-Type header of a multipart/related response.

    >>> content_type("application/dicom", "b", **{"transfer-syntax": "1.2.840.10008.1.2.1"})
    'multipart/related; type="application/dicom"; boundary=b; transfer-syntax=1.2.840.10008.1.2.1'
    """
    extra = "".join(f"; {name}={value}" for name, value in params.items())
    return f'multipart/related; type="{related_type}"; boundary={boundary}{extra}'


def part_header(boundary: str, part_type: str, headers: dict[str, str] | None = None) -> bytes:
    """The delimiter and headers that open one part (body bytes follow, then the next
    delimiter). The first part needs no leading CRLF; later ones get it from here."""
    lines = [f"--{boundary}", f"Content-Type: {part_type}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def part_separator() -> bytes:
    """CRLF that ends a part's body, before the next delimiter."""
    return b"\r\n"


def closing(boundary: str) -> bytes:
    """The close delimiter that ends the body."""
    return f"--{boundary}--\r\n".encode("latin-1")


def encode(parts: list[tuple[str, bytes]], boundary: str) -> bytes:
    """A whole body from (part Content-Type, bytes) pairs, for small responses."""
    out: list[bytes] = []
    for part_type, body in parts:
        out += [part_header(boundary, part_type), body, part_separator()]
    out.append(closing(boundary))
    return b"".join(out)
