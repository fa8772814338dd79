"""Zero-copy sending (:mod:`aifi.dicomweb.direct_send`) on uvicorn's httptools protocol.

:func:`install` gives an HTTP request's scope a :class:`UvicornDirectSend` when the
``send`` callable the app was called with is uvicorn's own (``RequestResponseCycle.send``
of ``uvicorn.protocols.http.httptools_impl``, the protocol ``aifi serve`` runs with
uvicorn's standard extras). Anything else (h11, another server, a test transport) gets
no extension, and responses stream their bodies the ordinary way.

How a body is sent: once uvicorn has written the response head (``Content-Length``
framing, nothing left in the transport's buffer), a worker thread writes the pieces to
the connection's socket: bytes with ``send(MSG_MORE)`` and file ranges with
``os.sendfile`` (the page-cache pages go to the socket; no copy in this process), and
waits with ``poll`` when the socket is full. The thread works on a duplicate of the
socket's descriptor, so a connection closed meanwhile can never hand its descriptor
number to another client's connection under it. Then uvicorn's count of the body still
owed is settled, and the response's final (empty) body message completes the exchange
in uvicorn as usual (keep-alive, access log).

This reaches into uvicorn: its cycle's ``transport``, ``chunked_encoding``,
``expected_content_length`` and ``disconnected``. ``tests/contract/test_direct_send.py``
checks every one of them against the installed uvicorn, byte for byte on the wire.
"""

from __future__ import annotations

import asyncio
import logging
import os
import select
import socket
from collections.abc import MutableMapping, Sequence
from typing import Any

import anyio.to_thread
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from aifi.dicomweb.direct_send import DIRECT_SEND, FileSegment, Piece, length

log = logging.getLogger(__name__)

STALL_SECONDS = 60.0
"""A client that takes nothing for this long is given up on (the connection closes)."""

_BUFFER_WAITS = 50
"""Event-loop turns to wait for the response head to leave the transport's buffer."""


def install(scope: MutableMapping[str, Any], send: Any) -> None:
    """Offer :data:`DIRECT_SEND` in ``scope`` when ``send`` is uvicorn's httptools cycle."""
    cycle = getattr(send, "__self__", None)
    if type(cycle) is RequestResponseCycle:
        extensions = scope.get("extensions") or {}
        scope["extensions"] = {**extensions, DIRECT_SEND: UvicornDirectSend(cycle)}


class UvicornDirectSend:
    def __init__(self, cycle: Any) -> None:
        self.cycle = cycle

    async def send_pieces(self, pieces: Sequence[Piece]) -> bool:
        cycle = self.cycle
        transport = cycle.transport
        total = length(pieces)
        if (
            cycle.scope["method"] != "GET"
            or not cycle.response_started
            or cycle.response_complete
            or cycle.chunked_encoding is not False
            or cycle.expected_content_length != total
            or cycle.disconnected
            or transport.is_closing()
        ):
            return False
        for _ in range(_BUFFER_WAITS):
            if not transport.get_write_buffer_size():
                break
            await asyncio.sleep(0.001)
        else:
            return False
        raw = transport.get_extra_info("socket")
        if raw is None:
            return False
        # Never setblocking() on it: the duplicate shares uvicorn's O_NONBLOCK flag.
        sock = socket.socket(fileno=os.dup(raw.fileno()))
        try:
            await anyio.to_thread.run_sync(_pump, sock, pieces)
        except OSError as exc:
            # The client went away (or stalled) with part of the body: as for any streamed
            # answer, the connection is done and nothing more is said to it.
            log.debug("zero-copy send ended early: %s", exc)
            transport.close()
            cycle.expected_content_length = 0
            return True
        finally:
            sock.close()
        cycle.expected_content_length -= total
        return True


def _wait_writable(poller: select.poll) -> None:
    events = poller.poll(STALL_SECONDS * 1000)
    if not events:
        raise TimeoutError("client took nothing for 60 s")
    if any(flags & (select.POLLERR | select.POLLHUP | select.POLLNVAL) for _, flags in events):
        raise BrokenPipeError("connection closed by the client")


def _pump(sock: socket.socket, pieces: Sequence[Piece]) -> None:
    """Write ``pieces`` to the non-blocking ``sock`` (blocking this worker thread)."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT)
    last = len(pieces) - 1
    for index, piece in enumerate(pieces):
        if isinstance(piece, FileSegment):
            _send_file(sock.fileno(), piece, poller)
            continue
        # MSG_MORE holds a short segment back for what follows; never on the last piece,
        # or its bytes could wait in the kernel for the 200 ms cork timeout (seen: one
        # response in thirty took 220 ms instead of 10 when nothing was left in flight).
        flags = socket.MSG_MORE if index < last else 0
        view = memoryview(piece)
        while view:
            try:
                sent = sock.send(view, flags)
            except BlockingIOError:
                _wait_writable(poller)
                continue
            view = view[sent:]


def _send_file(fd: int, segment: FileSegment, poller: select.poll) -> None:
    # os.open, not open(): a file object costs four more system calls (fstat, ioctl,
    # lseek), each a release and re-take of the GIL that the other senders contend for.
    # The size was checked against the index when the answer was planned; a file that
    # ends early after all is caught below (sendfile sends nothing more).
    file = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset, remaining = segment.offset, segment.size
        while remaining:
            try:
                sent = os.sendfile(fd, file, offset, remaining)
            except BlockingIOError:
                _wait_writable(poller)
                continue
            if not sent:
                raise OSError(f"Stored file {os.path.basename(segment.path)} ended early")
            offset += sent
            remaining -= sent
    finally:
        os.close(file)


__all__ = ["STALL_SECONDS", "UvicornDirectSend", "install"]
