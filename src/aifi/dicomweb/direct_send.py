"""Zero-copy sending of stored files: the contract between a response and the server.

A WADO-RS answer is mostly stored Part 10 files, sent as they are. Read into Python and
written to the socket, each byte is copied twice by the CPU of a server process that also
parses every STOW-RS request; the kernel's ``sendfile`` hands the page-cache pages to the
socket instead. ASGI has no portable way to do that on a multipart body (the
``http.response.pathsend`` extension sends one whole file), so the server side offers it
under its own extension key, :data:`DIRECT_SEND`: an object with the
:class:`DirectSend` interface. A response that finds it sends its start message as usual,
then hands its pieces (bytes and :class:`FileSegment` ranges) to ``send_pieces``; where it
is absent (other servers, the test client), or declines, the response streams the same
bytes the ordinary way. The bytes on the wire are the same either way.

:mod:`aifi.hub.direct_send` implements it for uvicorn's httptools protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

DIRECT_SEND = "aifi.direct_send"
"""Key in ``scope["extensions"]`` of the server's :class:`DirectSend`."""


@dataclass(frozen=True, slots=True)
class FileSegment:
    """``size`` bytes of the file at ``path`` from ``offset``."""

    path: str
    offset: int
    size: int


Piece = bytes | FileSegment


def length(pieces: Sequence[Piece]) -> int:
    return sum(p.size if isinstance(p, FileSegment) else len(p) for p in pieces)


class DirectSend(Protocol):
    async def send_pieces(self, pieces: Sequence[Piece]) -> bool:
        """Write ``pieces`` as the body of the response whose start message was sent, with
        a ``Content-Length`` of exactly their length. False, having written nothing, when
        it cannot (the response then sends them as ordinary body messages). A connection
        that fails part-way is closed, as a streamed answer's would be: True then too."""
        ...


__all__ = ["DIRECT_SEND", "DirectSend", "FileSegment", "Piece", "length"]
