"""WADO-RS response bodies (PS3.18 §8.6.1.2, §10.4.3): multipart/related bodies produced
in worker threads a few MiB per trip, and bodies of stored-file ranges with a known length,
handed to the server's zero-copy sender when it has one (:mod:`aifi.dicomweb.direct_send`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator

import anyio
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

from aifi.dicomweb import transcode
from aifi.dicomweb.direct_send import DIRECT_SEND, DirectSend, FileSegment, Piece, length
from aifi.dicomweb.multipart import closing, content_type, new_boundary, part_header, part_separator

MIB = 1 << 20
WINDOW = 16 * MIB
"""Stored files are mapped (never copied into Python buffers) this much at a time."""
BATCH = 4 * MIB
"""Bytes produced per trip to a worker thread."""
SMALL = 64 * 1024
"""Pieces below this size are joined before they are written."""

Chunk = bytes | memoryview
"""A piece of a response body: bytes, or a view of a memory-mapped stored file."""
Part = tuple[str, dict[str, str], Iterable[Chunk]]
"""One multipart part: Content-Type, further headers, body pieces."""


def coalesce(pieces: Iterable[Chunk], small: int = SMALL) -> Iterator[Chunk]:
    """Join runs of small pieces (part headers, JSON items) into one write; pass large
    pieces (file contents) through untouched, never copying them."""
    pending: list[Chunk] = []
    length = 0
    for piece in pieces:
        if len(piece) >= small:
            if pending:
                yield b"".join(pending)
                pending, length = [], 0
            yield piece
            continue
        pending.append(piece)
        length += len(piece)
        if length >= small:
            yield b"".join(pending)
            pending, length = [], 0
    if pending:
        yield b"".join(pending)


def take(pieces: Iterator[Chunk], budget: int) -> list[Chunk]:
    batch: list[Chunk] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= budget:
            break
    return batch


async def threaded_body(pieces: Iterable[Chunk]) -> AsyncIterator[Chunk]:
    """Run a blocking body producer (file reads, transcoding, rendering) in a worker
    thread, :data:`BATCH` bytes per trip, and hand the pieces to the server one by one.
    Much cheaper than a thread trip per piece, and the event loop never blocks on I/O."""
    iterator = iter(coalesce(pieces))
    while batch := await anyio.to_thread.run_sync(take, iterator, BATCH):
        for piece in batch:
            yield piece


def streaming(
    pieces: Iterable[Chunk], headers: dict[str, str], background: BackgroundTask | None = None
) -> StreamingResponse:
    return StreamingResponse(threaded_body(pieces), headers=headers, background=background)


def multipart_body(parts: Iterable[Part], boundary: str) -> Iterator[Chunk]:
    """A multipart/related body (PS3.18 §8.6.1.2)."""
    for part_type, headers, body in parts:
        yield part_header(boundary, part_type, headers)
        yield from body
        yield part_separator()
    yield closing(boundary)


def stream_parts(
    parts: Iterable[Part], related_type: str, background: BackgroundTask | None = None, **extra: str
) -> StreamingResponse:
    boundary = new_boundary()
    return streaming(
        multipart_body(parts, boundary),
        {"Content-Type": content_type(related_type, boundary, **extra)},
        background,
    )


def file_pieces(pieces: Iterable[Piece]) -> Iterator[Chunk]:
    for piece in pieces:
        if isinstance(piece, FileSegment):
            yield from transcode.file_views(piece.path, piece.size, WINDOW, piece.offset)
        else:
            yield piece


class FilesResponse(StreamingResponse):
    """A body of bytes and stored-file ranges with a known length: handed whole to the
    server's zero-copy sender when it offers one (:mod:`aifi.dicomweb.direct_send`),
    streamed from memory-mapped views otherwise; the same bytes either way."""

    def __init__(self, pieces: list[Piece], headers: dict[str, str]) -> None:
        self.pieces = pieces
        super().__init__(threaded_body(file_pieces(pieces)), headers=headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        direct: DirectSend | None = (scope.get("extensions") or {}).get(DIRECT_SEND)
        if direct is None:
            await super().__call__(scope, receive, send)
            return
        start = {"type": "http.response.start", "status": self.status_code}
        await send({**start, "headers": self.raw_headers})
        if not await direct.send_pieces(self.pieces):
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def files_response(
    parts: list[tuple[str, dict[str, str], Piece]], boundary: str, headers: dict[str, str]
) -> FilesResponse:
    """A multipart/related body (PS3.18 §8.6.1.2) of bodies known up front (stored files
    sent as they are, converted bytes), with its Content-Length."""
    pieces: list[Piece] = []
    pending = b""
    for part_type, part_headers, body in parts:
        pieces += [pending + part_header(boundary, part_type, part_headers), body]
        pending = part_separator()
    pieces.append(pending + closing(boundary))
    headers["Content-Length"] = str(length(pieces))
    return FilesResponse(pieces, headers)
